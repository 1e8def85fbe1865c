/**
 * The REST API over a real server on loopback (memory backend): submit, jobs, tasks, logs,
 * exec into daemons, delete, lists, idempotency, users, ownership, OpenAPI, health, metrics.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap, utf8 } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer, serviceFunctionAuthorizer } from '@lessl/service';
import type { Composer } from '@lessl/core';
import { ADMIN_TOKEN, settle, shell, start, type Harness, SEED_SPEC as seed } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await start();
});
afterAll(async () => {
  await h.close();
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;

describe('POST /v1/tasks', () => {
  test('?wait answers 201 with the finished task: per-command exit codes and output', async () => {
    const r = await h.call('/v1/tasks?wait=10', { method: 'POST', json: seed });
    expect(r.status).toBe(201);
    const t = await body(r);
    expect(r.headers.get('location')).toBe(`/v1/tasks/${t.id}`);
    expect(t).toMatchObject({ name: 'hello_world', state: 'exited', exitCode: 0, image: 'image://local/busybox', daemon: false });
    expect(t.commands.map((c: Json) => [c.exitCode, c.output])).toEqual([
      [0, 'hello value\n'],
      [0, 'second\n'],
    ]);
    expect(Date.parse(t.expires) - Date.parse(t.started)).toBe(3600_000);
  });

  test('202 + Location to the job; the job answers 303 to the task once done', async () => {
    const r = await h.call('/v1/tasks', { method: 'POST', json: { image: 'busybox', cmd: ['echo hi'] } });
    expect(r.status).toBe(202);
    const job = await body(r);
    expect(r.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job.state).toMatch(/queued|running/);
    const done = await settle(h, job.id);
    expect(done.status).toBe(303);
    expect(done.location).toBe(`/v1/tasks/${job.tasks[0]}`);
    const t = await body(await h.call(String(done.location)));
    expect(t.commands[0].output).toBe('hi\n');
  });

  test('the first failing command stops the rest; each keeps its own exit code', async () => {
    const t = await body(
      await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', cmd: ['echo a', 'exit 3', 'echo never'] } }),
    );
    expect(t.commands.map((c: Json) => [c.state, c.exitCode])).toEqual([
      ['exited', 0],
      ['exited', 3],
      ['skipped', null],
    ]);
    expect(t.exitCode).toBe(3);
  });

  test('a batch is one job; done, it points at the list of its tasks', async () => {
    const r = await h.call('/v1/tasks?wait=10', {
      method: 'POST',
      json: [
        { image: 'busybox', cmd: ['echo one'], task_name: 'b1' },
        { image: 'busybox', cmd: ['echo two'], task_name: 'b2' },
      ],
    });
    expect(r.status).toBe(201);
    const page = await body(r);
    expect(page.items.map((t: Json) => t.commands[0].output).sort()).toEqual(['one\n', 'two\n']);
    const job = page.items[0].job;
    expect(r.headers.get('location')).toBe(`/v1/tasks?job=${job}`);
    const listed = await body(await h.call(`/v1/tasks?job=${job}`));
    expect(listed.items).toHaveLength(2);
  });

  test('Idempotency-Key: a retried request gets the same job; another body with the key is 409', async () => {
    const send = (json: unknown) => h.call('/v1/tasks', { method: 'POST', json, headers: { 'idempotency-key': 'retry-1' } });
    const a = await body(await send({ image: 'busybox', cmd: ['echo once'] }));
    const b = await body(await send({ image: 'busybox', cmd: ['echo once'] }));
    expect(b.id).toBe(a.id);
    const c = await send({ image: 'busybox', cmd: ['echo other'] });
    expect(c.status).toBe(409);
    expect(c.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect((await body(c)).tag).toBe('Conflict');
    // the same key from another user is another job
    const d = await h.call('/v1/tasks', {
      method: 'POST',
      json: { image: 'busybox', cmd: ['echo once'] },
      headers: { 'idempotency-key': 'retry-1' },
      token: h.tokens.bob,
    });
    expect((await body(d)).id).not.toBe(a.id);
  });

  test('limits: defaults apply, past the maxima is a 400 naming the field; networks only where allowed', async () => {
    const over = await h.call('/v1/tasks', {
      method: 'POST',
      json: { image: 'busybox', cmd: ['true'], limits: { memory: 2 ** 40 } },
    });
    expect(over.status).toBe(400);
    expect((await body(over)).keys).toEqual(['limits.memory']);
    const net = await h.call('/v1/tasks', { method: 'POST', json: { image: 'busybox', cmd: ['true'], network: 'host' } });
    expect(net.status).toBe(400);
    expect((await body(net)).keys).toEqual(['network']);
  });
});

describe('daemon tasks', () => {
  test('a daemon keeps running; PUT execs more commands in it; DELETE kills and removes it, idempotently', async () => {
    const t = await body(
      await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', daemon: true, cmd: ['echo up'] } }),
    );
    expect(t.state).toBe('running');
    expect(t.expires).not.toBeNull();
    const x = await h.call(`/v1/tasks/${t.id}?wait=10`, {
      method: 'PUT',
      json: { cmd: ['echo more $X', 'exit 4'], env: { X: 'yes' } },
    });
    expect(x.status).toBe(201);
    const after = await body(x);
    expect(after.commands.map((c: Json) => [c.cmd, c.exitCode, c.output])).toEqual([
      ['echo up', 0, 'up\n'],
      ['echo more $X', 0, 'more yes\n'],
      ['exit 4', 4, ''],
    ]);
    expect(after.state).toBe('running');
    const logs = await h.call(`/v1/tasks/${t.id}/logs`);
    expect(await logs.text()).toBe('up\nmore yes\n');
    expect((await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await h.call(`/v1/tasks/${t.id}`)).status).toBe(404);
    // nothing of it is left in the registry
    expect(h.registry.scan('').filter((e) => e.id.name.startsWith(t.id))).toEqual([]);
  });

  test('PUT on a one-shot task that ended is 409', async () => {
    const t = await body(await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', cmd: ['true'] } }));
    const r = await h.call(`/v1/tasks/${t.id}`, { method: 'PUT', json: { cmd: ['echo x'] } });
    expect(r.status).toBe(409);
  });

  test('logs?follow=true streams until the task ends', async () => {
    const job = await body(
      await h.call('/v1/tasks', { method: 'POST', json: { image: 'busybox', cmd: ['echo a; sleep 0.3; echo b', 'echo c'] } }),
    );
    const r = await h.call(`/v1/tasks/${job.tasks[0]}/logs?follow=true`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('a\nb\nc\n');
  });

  test('logs?follow=true from the submission loses no output of commands that start late (made, then bound)', async () => {
    const backend = await unwrap(
      openMemoryBackend({ authorize: ownerAuthorizer, authorizeFunction: serviceFunctionAuthorizer, run: shell }),
    );
    // every commit of the service waits: each command's task exists a while before it is bound and runs
    const commit: Composer['commit'] = (hd, ctx) => async () => {
      await new Promise((res) => setTimeout(res, 300));
      return backend.composer.commit(hd, ctx)();
    };
    const composer = new Proxy(backend.composer, {
      get: (t, k) => {
        const v: unknown = Reflect.get(t, k);
        return k === 'commit' ? commit : typeof v === 'function' ? v.bind(t) : v;
      },
    });
    const slow = await start({ backend: { ...backend, composer } });
    try {
      const job = await body(
        await slow.call('/v1/tasks', { method: 'POST', json: { image: 'busybox', cmd: ['echo a', 'echo b', 'echo c'] } }),
      );
      const r = await slow.call(`/v1/tasks/${job.tasks[0]}/logs?follow=true`);
      expect(await r.text()).toBe('a\nb\nc\n');
    } finally {
      await slow.close();
      await backend.close();
    }
  });
});

describe('GET /v1/tasks', () => {
  test("lists only the caller's tasks, newest first, with a cursor", async () => {
    for (const n of ['p1', 'p2', 'p3'])
      await h.call('/v1/tasks?wait=10', {
        method: 'POST',
        json: { image: 'busybox', cmd: ['true'], task_name: n },
        token: h.tokens.bob,
      });
    const first = await body(await h.call('/v1/tasks?limit=2', { token: h.tokens.bob }));
    const all = (await body(await h.call('/v1/tasks?limit=500', { token: h.tokens.bob }))).items as Json[];
    expect(first.items.map((t: Json) => t.id)).toEqual(all.slice(0, 2).map((t) => t.id));
    const second = await body(await h.call(`/v1/tasks?limit=2&cursor=${first.next}`, { token: h.tokens.bob }));
    expect(second.items.map((t: Json) => t.id)).toEqual(all.slice(2, 4).map((t) => t.id));
    expect(all.every((t) => t.id.startsWith('t_'))).toBe(true);
    const anns = (await body(await h.call('/v1/tasks?limit=500'))).items as Json[];
    expect(anns.some((t) => all.some((b) => b.id === t.id))).toBe(false);
    const named = await body(await h.call('/v1/tasks?name=p2', { token: h.tokens.bob }));
    expect(named.items.map((t: Json) => t.name)).toEqual(['p2']);
    const exited = await body(await h.call('/v1/tasks?state=exited&limit=500', { token: h.tokens.bob }));
    expect(exited.items.length).toBe(all.filter((t) => t.state === 'exited').length);
  });
});

describe('users and ownership', () => {
  test("another user's task and job are 404, exactly like ones that do not exist", async () => {
    const r = await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', cmd: ['echo mine'] } });
    const t = await body(r);
    const other = { token: h.tokens.bob };
    for (const [path, method] of [
      [`/v1/tasks/${t.id}`, 'GET'],
      [`/v1/tasks/${t.id}/logs`, 'GET'],
      [`/v1/tasks/${t.id}`, 'DELETE'],
      [`/v1/jobs/${t.job}`, 'GET'],
    ] as const) {
      const theirs = await h.call(path, { ...other, method });
      const none = await h.call(path.replace(t.id, 't_00000000000000000000').replace(t.job, 'j_00000000000000000000'), {
        ...other,
        method,
      });
      expect([theirs.status, none.status]).toEqual([404, 404]);
      expect((await body(theirs)).tag).toBe('NotFound');
    }
    const put = await h.call(`/v1/tasks/${t.id}`, { ...other, method: 'PUT', json: { cmd: ['echo x'] } });
    expect(put.status).toBe(404);
    expect((await h.call(`/v1/tasks/${t.id}`)).status).toBe(200);
  });

  test('no token, a bad token: 401 problem with WWW-Authenticate; users are made by admins only', async () => {
    for (const token of [null, 'lsl_not-a-real-token-at-all', 'x']) {
      const r = await h.call('/v1/tasks', { token });
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toMatch(/Bearer/);
      expect((await body(r)).tag).toBe('PermissionDenied');
    }
    expect((await h.call('/v1/users', { method: 'POST', json: { name: 'eve' } })).status).toBe(403);
    const made = await h.call('/v1/users', { method: 'POST', json: { name: 'carol' }, token: h.tokens.admin });
    expect(made.status).toBe(201);
    const { token } = await body(made);
    expect((await h.call('/v1/tasks', { token })).status).toBe(200);
    expect((await h.call('/v1/users', { method: 'POST', json: { name: 'carol' }, token: h.tokens.admin })).status).toBe(409);
    // tokens are stored hashed: the token itself appears nowhere in the records
    expect([...h.server.db.tokens.keys()].includes(token)).toBe(false);
  });

  test("a resource's mnt mounts a named volume of the caller's", async () => {
    await unwrap(
      h.server.backend.stores.volume.create({
        id: 'volume://local/anns-data',
        data: new Uint8Array([1]),
        ro: utf8({ owner: 'ann' }),
      }),
    );
    const spec = { image: 'busybox', cmd: ['true'], resources: [{ mnt: 'anns-data', dest: '/data' }] };
    const t = await body(await h.call('/v1/tasks?wait=10', { method: 'POST', json: spec }));
    expect(t.state).toBe('exited');
    expect((await h.call('/v1/tasks', { method: 'POST', json: spec, token: h.tokens.bob })).status).toBe(400);
  });

  test('the first start makes an admin token once; later starts do not', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-admin-'));
    const saved = process.env.LESSL_ADMIN_TOKEN;
    delete process.env.LESSL_ADMIN_TOKEN;
    try {
      const backend = await unwrap(openMemoryBackend());
      const first = await createServer({ backend, data: dir });
      const token = first.initialAdminToken;
      expect(token).toMatch(/^lsl_[A-Za-z0-9_-]{43}$/);
      await first.close();
      const again = await createServer({ backend, data: dir });
      expect(again.initialAdminToken).toBeUndefined();
      const url = await again.listen();
      const r = await fetch(`${url}/v1/users`, { headers: { authorization: `Bearer ${token}` } });
      expect(((await r.json()) as Json[]).map((u) => u.name)).toEqual(['admin']);
      await again.close();
      await backend.close();
    } finally {
      if (saved !== undefined) process.env.LESSL_ADMIN_TOKEN = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('per-user maxima bound what a user may ask for', async () => {
    const made = await body(
      await h.call('/v1/users', { method: 'POST', json: { name: 'small', maxima: { memory: 64 << 20 } }, token: h.tokens.admin }),
    );
    const r = await h.call('/v1/tasks', {
      method: 'POST',
      json: { image: 'busybox', cmd: ['true'], limits: { memory: 128 << 20 } },
      token: made.token,
    });
    expect(r.status).toBe(400);
    const ok = await h.call('/v1/tasks', {
      method: 'POST',
      json: { image: 'busybox', cmd: ['true'], limits: { memory: 32 << 20 } },
      token: made.token,
    });
    expect(ok.status).toBe(202);
  });
});

describe('events', () => {
  type Sse = { id: string; data: { id: string; type: string; seq?: number } };
  /** Reads the SSE of a user until `until` holds (`Last-Event-ID` and the query as given). */
  const read = async (o: { token?: string; last?: string; query?: string }, until: (evs: Sse[]) => boolean): Promise<Sse[]> => {
    const ac = new AbortController();
    const headers: Record<string, string> = o.last === undefined ? {} : { 'last-event-id': o.last };
    const r = await h.call(`/v1/events${o.query ?? ''}`, {
      headers,
      signal: ac.signal,
      ...(o.token === undefined ? {} : { token: o.token }),
    });
    expect(r.headers.get('content-type')).toMatch(/text\/event-stream/);
    const dec = new TextDecoder();
    let text = '';
    const events: Sse[] = [];
    for await (const c of r.body as unknown as AsyncIterable<Uint8Array>) {
      text += dec.decode(c, { stream: true });
      const blocks = text.split('\n\n');
      text = blocks.pop() ?? '';
      for (const b of blocks) {
        const field = (f: string) =>
          b
            .split('\n')
            .find((l) => l.startsWith(`${f}: `))
            ?.slice(f.length + 2);
        const data = field('data');
        if (data !== undefined) events.push({ id: field('id') ?? '', data: JSON.parse(data) });
      }
      if (until(events)) break;
    }
    ac.abort();
    return events;
  };
  const run = async (cmd: string, token?: string): Promise<Json> =>
    body(
      await h.call('/v1/tasks?wait=10', {
        method: 'POST',
        json: { image: 'busybox', cmd: [cmd] },
        ...(token === undefined ? {} : { token }),
      }),
    );
  /** Until the task's unbound arrived. */
  const of = (t: string) => (evs: Sse[]) => evs.some((e) => e.data.type === 'unbound' && e.data.id.includes(t));

  test("SSE of the caller's elements only, resumable with Last-Event-ID and ?since", async () => {
    const mine = await run('echo ev');
    const theirs = await run('echo theirs', h.tokens.bob);
    const evs = await read({ query: '?since=0' }, of(mine.id));
    expect(evs.some((e) => e.data.id.includes(String(mine.id)))).toBe(true);
    expect(evs.some((e) => e.data.id.includes(String(theirs.id)))).toBe(false);
    const ids = evs.map((e) => e.id);
    expect(new Set(ids).size).toBe(ids.length);
    // resume after the third: the rest, without the first three (the header, then the query)
    const resumed = await read({ last: ids[2] }, (e) => e.length >= 3);
    expect(resumed.slice(0, 3)).toEqual(evs.slice(3, 6));
    const viaQuery = await read({ query: `?since=${ids[2]}` }, (e) => e.length >= 3);
    expect(viaQuery.slice(0, 3)).toEqual(evs.slice(3, 6));
  });

  test('event ids survive a restart over the same data: Last-Event-ID resumes on the new process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-events-'));
    const backend = await unwrap(openMemoryBackend());
    try {
      const first = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      const at = await first.listen();
      for (const n of ['a', 'b'])
        await unwrap(backend.stores.image.create({ id: `image://local/${n}`, data: new Uint8Array(1) }));
      const ids = async (url: string, headers: Record<string, string>, count: number): Promise<string[]> => {
        const ac = new AbortController();
        const r = await fetch(`${url}/v1/events`, {
          headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...headers },
          signal: ac.signal,
        });
        let text = '';
        let got: string[] = [];
        for await (const c of r.body as unknown as AsyncIterable<Uint8Array>) {
          text += Buffer.from(c).toString();
          got = [...text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1] as string);
          if (got.length >= count) break;
        }
        ac.abort();
        return got;
      };
      const before = await ids(at, { 'last-event-id': '0' }, 2);
      await first.close();
      const again = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      const after = await ids(await again.listen(), { 'last-event-id': before[0] as string }, 1);
      expect(after).toEqual([before[1]]);
      await again.close();
    } finally {
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a user's event ids are opaque and their own: they reveal nothing of other users' activity", async () => {
    const first = await run('echo one');
    for (let i = 0; i < 3; i++) await run(`echo bob ${i}`, h.tokens.bob); // activity in between
    const second = await run('echo two');
    const ann = await read({ query: '?since=0' }, of(second.id));
    const pair = ann.filter((e) => e.data.id.includes(first.id) || e.data.id.includes(second.id));
    // no number anywhere: ids are 22 opaque characters, the data carries no seq
    for (const e of pair) {
      expect(e.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
      expect(e.id).not.toMatch(/^\d+$/);
      expect(e.data.seq).toBeUndefined();
    }
    // the same event has another id for another user (admin: who sees everything, with the seq)
    const admin = await read({ query: '?since=0', token: h.tokens.admin }, (evs) =>
      evs.some((e) => e.data.id.includes(second.id) && e.data.type === 'unbound'),
    );
    const same = admin.find((e) => e.data.id === pair[0]?.data.id && e.data.type === pair[0]?.data.type);
    expect(typeof same?.data.seq).toBe('number');
    expect(same?.id).not.toBe(pair[0]?.id);
    expect(same?.id).not.toBe(String(same?.data.seq));
    // another user's id, or a number, does not resume a stream: 400, not a probe of the sequence
    for (const [last, token] of [
      [pair[0]?.id ?? '', h.tokens.bob],
      [String(same?.data.seq), undefined],
    ] as const) {
      const r = await h.call('/v1/events', { headers: { 'last-event-id': last }, ...(token === undefined ? {} : { token }) });
      expect([r.status, ((await r.json()) as { keys: string[] }).keys]).toEqual([400, ['Last-Event-ID']]);
    }
    expect((await h.call('/v1/events?since=5')).status).toBe(400);
  });
});

describe('service routes', () => {
  test('/openapi.json is a valid OpenAPI 3.1 document generated from the codecs', async () => {
    const doc = await body(await h.call('/openapi.json', { token: null }));
    expect(doc.openapi).toBe('3.1.0');
    await SwaggerParser.validate(structuredClone(doc) as never);
    const post = doc.paths['/v1/tasks'].post;
    const spec = post.requestBody.content['application/json'].schema.oneOf[0];
    expect(Object.keys(spec.properties).sort()).toEqual(
      [
        'cmd',
        'daemon',
        'env',
        'image',
        'limits',
        'network',
        'ports',
        'pwd',
        'resources',
        'stdin',
        'stdin_base64',
        'task_name',
        'ttl',
        'version',
      ].sort(),
    );
    expect(spec.additionalProperties).toBe(false);
    expect(Object.keys(doc.paths).sort()).toEqual(
      [
        '/healthz',
        '/metrics',
        '/r/{route}/{*}',
        '/v1/events',
        '/v1/functions',
        '/v1/functions/{name}',
        '/v1/functions/{name}/invoke',
        '/v1/functions/{name}/logs',
        '/v1/hosts',
        '/v1/hosts/{name}',
        '/v1/images',
        '/v1/images/{name}',
        '/v1/images/{name}/refresh',
        '/v1/images/purge',
        '/v1/pool',
        '/v1/jobs/{id}',
        '/v1/schemas/stack.json',
        '/v1/tasks',
        '/v1/tasks/{id}',
        '/v1/tasks/{id}/logs',
        '/v1/tasks/{id}/ports/{port}/{*}',
        '/v1/tasks/{id}/routes',
        '/v1/tasks/{id}/routes/{handle}',
        '/v1/users',
        '/v1/users/{name}',
        '/v1/whoami',
      ].sort(),
    );
  });

  test('/openapi.json: each use of a shared codec (a boolean, a path, the limits) has its own description', async () => {
    const doc = await body(await h.call('/openapi.json', { token: null }));
    const spec = doc.paths['/v1/tasks'].post.requestBody.content['application/json'].schema.oneOf[0].properties;
    const image = doc.paths['/v1/images'].post.requestBody.content['application/json'].schema.properties;
    const user = doc.paths['/v1/users'].post.requestBody.content['application/json'].schema.properties;
    expect(spec.daemon.description).toMatch(/^keep the container running/);
    expect(image.public.description).toBe('readable by every user (admins only)');
    expect(user.admin.description).toBeUndefined();
    expect(spec.pwd.description).toBe('the working directory of the commands');
    expect(spec.limits.description).toBeUndefined();
    expect(user.maxima.description).toMatch(/^per-user maxima/);
  });

  test('/healthz and /metrics answer without a token', async () => {
    const hz = await h.call('/healthz', { token: null });
    expect(hz.status).toBe(200);
    expect((await body(hz)).status).toBe('ok');
    const m = await (await h.call('/metrics', { token: null })).text();
    expect(m).toMatch(/lessl_jobs_accepted_total \d+/);
    expect(m).toMatch(/lessl_http_request_duration_seconds_count\{method="POST",route="\/v1\/tasks",status="201"\}/);
    expect(m).toMatch(/lessl_jobs\{state="done"\} \d+/);
  });
});
