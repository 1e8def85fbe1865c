/**
 * Functions over REST on a real server on loopback (memory backend): create, update and
 * versions, ownership (409, 404 for another user's private function), public functions (admins
 * only), invocations (stdin in, stdout out, the headers), deadlines, `?async` jobs, the body
 * limit, metrics, events for the owner only, removal while an invocation runs, logs, OpenAPI.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import SwaggerParser from '@apidevtools/swagger-parser';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { openMemoryBackend, type FakeProcess } from '@lessl/memory';
import { createServer, ownerAuthorizer, serviceFunctionAuthorizer } from '@lessl/service';
import { ADMIN_TOKEN, settle, shell, start, type Harness } from './helpers.js';

/** The tiny shell (its `cat` copies stdin), plus `upper`: stdin uppercased. */
const withStdin: FakeProcess = async (spec, io) => {
  if (spec.cmd.length !== 1 || spec.cmd[0] !== 'upper') return shell(spec, io);
  for await (const chunk of io.stdin) io.stdout(Buffer.from(chunk).toString('utf8').toUpperCase());
  return 0;
};

let h: Harness;
beforeAll(async () => {
  h = await start({ run: withStdin, policy: { maxInvokeBytes: 64 << 10 } });
});
afterAll(async () => {
  await h.close();
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;
const put = (name: string, json: unknown, token?: string): Promise<Response> =>
  h.call(`/v1/functions/${name}`, { method: 'PUT', json, ...(token === undefined ? {} : { token }) });
const invoke = (name: string, input: string | Uint8Array = '', token?: string, query = ''): Promise<Response> =>
  h.call(`/v1/functions/${name}/invoke${query}`, {
    method: 'POST',
    body: input,
    headers: { 'content-type': 'application/octet-stream' },
    ...(token === undefined ? {} : { token }),
  });

describe('PUT /v1/functions/{name}', () => {
  test('creates (201, version 1, defaults applied), keeps the version on an identical PUT, counts changes', async () => {
    const r = await put('upper', { image: 'busybox', argv: ['upper'] });
    expect(r.status).toBe(201);
    expect(r.headers.get('location')).toBe('/v1/functions/upper');
    const v = await body(r);
    expect(v).toMatchObject({
      name: 'upper',
      owner: 'ann',
      version: 1,
      image: 'busybox',
      argv: ['upper'],
      env: {},
      network: 'none',
      reuse: 'per-invocation',
      concurrency: 1,
      min_containers: 0,
      max_containers: 4,
      idle_seconds: 300,
      public: false,
      limits: { memory: 256 << 20, cpus: 1, pids: 256, timeout: 300, output: 1 << 20 },
    });
    const same = await put('upper', { image: 'busybox', argv: ['upper'] });
    expect(same.status).toBe(200);
    expect((await body(same)).version).toBe(1);
    const changed = await put('upper', { image: 'busybox', argv: ['upper'], description: 'shouts', reuse: 'per-function' });
    expect(changed.status).toBe(200);
    expect(await body(changed)).toMatchObject({ version: 2, description: 'shouts', reuse: 'per-function' });
    expect(await body(await h.call('/v1/functions/upper'))).toMatchObject({ version: 2, owner: 'ann' });
  });

  test('a shell command is kept as cmd; limits in the service units come back as given', async () => {
    const v = await body(
      await put('shout', { image: 'busybox', cmd: 'echo hi', limits: { timeout: 5, output: 1000, memory: 64 << 20 } }),
    );
    expect(v).toMatchObject({ cmd: 'echo hi', limits: { timeout: 5, output: 1000, memory: 64 << 20, cpus: 1 } });
    expect(v.argv).toBeUndefined();
  });

  test('bad bodies are 400 naming the fields, and nothing is made', async () => {
    const cases: [unknown, string][] = [
      [{ image: 'busybox', argv: ['cat'], cmd: 'cat' }, 'argv'],
      [{ image: 'busybox' }, 'cmd'],
      [{ image: 'busybox', cmd: 'x', min_containers: 5, max_containers: 2 }, 'min_containers'],
      [{ image: 'busybox', cmd: 'x', limits: { timeout: 999_999 } }, 'limits.timeout'],
      [{ image: 'busybox', cmd: 'x', network: 'host' }, 'network'],
      [{ image: 'nosuch', cmd: 'x' }, 'image'],
      [{ image: 'busybox', cmd: 'x', concurrency: 0 }, 'concurrency'],
      [{ image: 'busybox', cmd: 'x', shell: true }, 'shell'],
    ];
    for (const [json, key] of cases) {
      const r = await put('bad', json);
      expect(r.status, JSON.stringify(json)).toBe(400);
      expect((await body(r)).keys, JSON.stringify(json)).toContain(key);
    }
    expect((await h.call('/v1/functions/bad')).status).toBe(404);
    expect((await put('Bad Name', { image: 'busybox', cmd: 'x' })).status).toBe(404);
  });

  test("a user's own maxima bound a function's limits as they bound a task's", async () => {
    const made = await h.call('/v1/users', {
      method: 'POST',
      token: ADMIN_TOKEN,
      json: { name: 'carl', maxima: { timeout: 10, memory: 32 << 20 } },
    });
    const carl = String((await body(made)).token);
    const v = await body(await put('carls', { image: 'busybox', cmd: 'echo c' }, carl));
    expect(v.limits).toMatchObject({ timeout: 10, memory: 32 << 20 });
    const over = await put('carls', { image: 'busybox', cmd: 'echo c', limits: { timeout: 20 } }, carl);
    expect(over.status).toBe(400);
    expect((await body(over)).keys).toEqual(['limits.timeout']);
  });

  test("another user's name is 409; their private function is 404 to read, invoke, delete and list", async () => {
    await put('anns', { image: 'busybox', cmd: 'echo mine' });
    expect((await put('anns', { image: 'busybox', cmd: 'echo theirs' }, h.tokens.bob)).status).toBe(409);
    expect((await h.call('/v1/functions/anns', { token: h.tokens.bob })).status).toBe(404);
    expect((await invoke('anns', '', h.tokens.bob)).status).toBe(404);
    expect((await invoke('anns', '', h.tokens.bob, '?async')).status).toBe(404);
    expect((await h.call('/v1/functions/anns', { method: 'DELETE', token: h.tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/functions/anns/logs', { token: h.tokens.bob })).status).toBe(404);
    const names = (await body(await h.call('/v1/functions', { token: h.tokens.bob }))).functions.map((f: Json) => f.name);
    expect(names).not.toContain('anns');
    expect(await (await invoke('anns')).text()).toBe('mine\n');
    const admin = await body(await h.call('/v1/functions', { token: h.tokens.admin }));
    expect(admin.functions.map((f: Json) => f.name)).toContain('anns');
  });

  test('public functions: admins only; others invoke them but do not delete them or read their logs', async () => {
    const refused = await put('everyone', { image: 'busybox', argv: ['upper'], public: true });
    expect(refused.status).toBe(403);
    const made = await put('everyone', { image: 'busybox', argv: ['upper'], public: true }, h.tokens.admin);
    expect(made.status).toBe(201);
    expect(await body(made)).toMatchObject({ owner: 'admin', public: true });
    const r = await invoke('everyone', 'from bob', h.tokens.bob);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('FROM BOB');
    const listed = await body(await h.call('/v1/functions', { token: h.tokens.bob }));
    expect(listed.functions.map((f: Json) => f.name)).toContain('everyone');
    expect((await h.call('/v1/functions/everyone', { method: 'DELETE', token: h.tokens.bob })).status).toBe(403);
    expect((await h.call('/v1/functions/everyone/logs', { token: h.tokens.bob })).status).toBe(403);
    expect((await h.call('/v1/functions/everyone', { token: h.tokens.bob })).status).toBe(200);
  });
});

describe('POST /v1/functions/{name}/invoke', () => {
  test('the body is stdin, the answer stdout, with the headers', async () => {
    await put('cat', { image: 'busybox', argv: ['cat'] });
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const r = await invoke('cat', bytes);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toBe('application/octet-stream');
    expect(new Uint8Array(await r.arrayBuffer())).toEqual(bytes);
    expect(r.headers.get('x-lessl-exit-code')).toBe('0');
    expect(r.headers.get('x-lessl-reason')).toBe('exited');
    expect(Number(r.headers.get('x-lessl-duration-ms'))).toBeGreaterThanOrEqual(0);
    expect(r.headers.get('x-lessl-stderr-bytes')).toBe('0');
    expect(r.headers.get('x-lessl-cold')).toBe('true');
    expect(r.headers.get('x-lessl-version')).toBe('1');
    expect(r.headers.get('x-lessl-truncated')).toBe('false');
    expect(r.headers.get('x-lessl-invocation')).toMatch(/.{8,}/);
    // any content type is stdin, JSON included
    const j = await h.call('/v1/functions/cat/invoke', { method: 'POST', json: { a: 1 } });
    expect(await j.text()).toBe('{"a":1}');
    const empty = await h.call('/v1/functions/cat/invoke', { method: 'POST' });
    expect(empty.status).toBe(200);
    expect(await empty.text()).toBe('');
  });

  test('a non-zero exit is 200 with its code; stderr is counted, not answered', async () => {
    await put('fails', { image: 'busybox', cmd: 'echo out; echo oops >&2; exit 3' });
    const r = await invoke('fails');
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('out\n');
    expect(r.headers.get('x-lessl-exit-code')).toBe('3');
    expect(r.headers.get('x-lessl-reason')).toBe('exited');
    expect(r.headers.get('x-lessl-stderr-bytes')).toBe('5');
    const logs = await body(await h.call('/v1/functions/fails/logs'));
    expect(logs.invocations[0]).toMatchObject({ exit_code: 3, reason: 'exited', stderr_tail: 'oops\n', version: 1 });
    expect(logs.invocations[0].id).toBe(r.headers.get('x-lessl-invocation'));
  });

  test('limits.timeout: past it the invocation is killed, reason deadline', async () => {
    await put('slow', { image: 'busybox', cmd: 'sleep 30', limits: { timeout: 1 } });
    const r = await invoke('slow');
    expect(r.status).toBe(200);
    expect(r.headers.get('x-lessl-reason')).toBe('deadline');
    expect(r.headers.get('x-lessl-exit-code')).toBe('');
  });

  test('?async answers 202 and a job whose result holds the exit code, stdout and stderr', async () => {
    await put('upper2', { image: 'busybox', argv: ['upper'] });
    for (const q of ['?async', '?async=true']) {
      const r = await invoke('upper2', 'quiet', undefined, q);
      expect(r.status).toBe(202);
      const job = await body(r);
      expect(r.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
      expect(job).toMatchObject({ kind: 'invoke', function: 'upper2' });
      const done = await settle(h, job.id);
      expect(done).toMatchObject({ state: 'done', status: 200, location: null });
      expect(done.result).toMatchObject({ exit_code: 0, reason: 'exited', stdout: 'QUIET', stderr: '', encoding: 'utf8' });
    }
    const other = await h.call(`/v1/jobs/${(await body(await invoke('upper2', 'x', undefined, '?async'))).id}`, {
      token: h.tokens.bob,
    });
    expect(other.status).toBe(404);
    expect((await invoke('upper2', '', undefined, '?async=maybe')).status).toBe(400);
  });

  test('?async with an Idempotency-Key: a retry gets the same job; the key with another body is 409', async () => {
    const once = (input: string): Promise<Response> =>
      h.call('/v1/functions/upper2/invoke?async', { method: 'POST', body: input, headers: { 'idempotency-key': 'k-1' } });
    const first = await body(await once('same'));
    const again = await once('same');
    expect(again.status).toBe(202);
    expect((await body(again)).id).toBe(first.id);
    expect((await once('other')).status).toBe(409);
    expect((await settle(h, String(first.id))).result).toMatchObject({ stdout: 'SAME' });
  });

  test('a body over the limit is 413, and nothing runs', async () => {
    const before = await body(await h.call('/v1/functions/cat/logs'));
    const r = await invoke('cat', new Uint8Array((64 << 10) + 1));
    expect(r.status).toBe(413);
    expect(r.headers.get('content-type')).toMatch(/application\/problem\+json/);
    const after = await body(await h.call('/v1/functions/cat/logs'));
    expect(after.invocations.length).toBe(before.invocations.length);
  });

  test('an unknown function is 404', async () => {
    expect((await invoke('nosuch')).status).toBe(404);
  });
});

describe('metrics and events', () => {
  test('/metrics counts invocations by function, outcome and start, with durations and containers', async () => {
    await put('counted', { image: 'busybox', cmd: 'echo x', reuse: 'per-function' });
    await invoke('counted');
    await invoke('counted');
    const m = await (await h.call('/metrics', { token: null })).text();
    expect(m).toContain('lessl_function_invocations_total{function="counted",outcome="ok",start="cold"} 1');
    expect(m).toContain('lessl_function_invocations_total{function="counted",outcome="ok",start="warm"} 1');
    expect(m).toContain('lessl_function_duration_seconds_count{function="counted"} 2');
    expect(m).toContain('lessl_function_containers{function="counted",state="idle"} 1');
    expect(m).toMatch(/lessl_function_invocations_total\{function="fails",outcome="error",start="(cold|warm)"\} 1/);
  });

  test("invoked events reach the function's owner and no other user", async () => {
    await put('audited', { image: 'busybox', cmd: 'echo secret' });
    const inv = (await invoke('audited')).headers.get('x-lessl-invocation');
    await put('bobs', { image: 'busybox', cmd: 'echo b' }, h.tokens.bob);
    const bobs = (await invoke('bobs', '', h.tokens.bob)).headers.get('x-lessl-invocation');
    const ann = await eventsUntil(h.tokens.ann ?? '', (e) => e.detail?.invocation === inv);
    expect(ann.at(-1)).toMatchObject({ type: 'invoked', id: 'function://audited', detail: { exitCode: 0, reason: 'exited' } });
    expect(JSON.stringify(ann)).not.toContain('secret');
    expect(ann.some((e) => e.id === 'function://bobs')).toBe(false);
    const bob = await eventsUntil(h.tokens.bob ?? '', (e) => e.detail?.invocation === bobs);
    expect(bob.filter((e) => String(e.id).startsWith('function://')).map((e) => e.id)).toEqual(
      expect.arrayContaining(['function://bobs']),
    );
    expect(bob.some((e) => e.id !== 'function://bobs' && String(e.id).startsWith('function://'))).toBe(false);
  });
});

/** The events of `token`'s stream from the start until `stop` matches one (included). */
const eventsUntil = async (token: string, stop: (e: Json) => boolean): Promise<Json[]> => {
  const ac = new AbortController();
  const r = await h.call('/v1/events?since=0', { token, signal: ac.signal });
  const reader = r.body?.getReader();
  const seen: Json[] = [];
  let buf = '';
  for (;;) {
    const chunk = await reader?.read();
    if (chunk === undefined || chunk.done) break;
    buf += Buffer.from(chunk.value).toString('utf8');
    const parts = buf.split('\n\n');
    buf = parts.pop() ?? '';
    for (const p of parts) {
      const data = p.split('\n').find((l) => l.startsWith('data: '));
      if (data === undefined) continue;
      const e = JSON.parse(data.slice(6)) as Json;
      seen.push(e);
      if (stop(e)) {
        ac.abort();
        return seen;
      }
    }
  }
  return seen;
};

describe('DELETE /v1/functions/{name}', () => {
  test('an invocation under way is killed and answers; nothing of the function is left', async () => {
    await put('longrun', { image: 'busybox', cmd: 'sleep 60', reuse: 'per-function', min_containers: 1 });
    const running = invoke('longrun');
    while (!h.server.backend.functions.stats().some((f) => f.name === 'longrun' && f.containers.busy === 1))
      await new Promise((r) => setTimeout(r, 10));
    expect((await h.call('/v1/functions/longrun', { method: 'DELETE' })).status).toBe(204);
    const r = await running;
    expect(r.status).toBe(200);
    expect(r.headers.get('x-lessl-reason')).toBe('killed');
    expect((await h.call('/v1/functions/longrun')).status).toBe(404);
    expect((await invoke('longrun')).status).toBe(404);
    expect((await h.call('/v1/functions/longrun', { method: 'DELETE' })).status).toBe(404);
    const left = h.server.backend.functions.stats().find((f) => f.name === 'longrun');
    expect(left === undefined || left.containers.busy + left.containers.idle + left.containers.starting === 0).toBe(true);
  });
});

describe('a client that goes away', () => {
  test('kills its invocation long before the command would end; its container is not reused', async () => {
    await put('hang', { image: 'busybox', cmd: 'sleep 600', reuse: 'per-function' });
    // a client of its own, whose socket really closes (fetch's pool would keep it)
    const req = request(`${h.url}/v1/functions/hang/invoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${h.tokens.ann ?? ''}` },
    });
    const gone = new Promise((resolve) => req.on('error', () => resolve('gone')).on('close', () => resolve('gone')));
    req.end();
    const busy = (): number => h.server.backend.functions.stats().find((f) => f.name === 'hang')?.containers.busy ?? 0;
    while (busy() === 0) await new Promise((r) => setTimeout(r, 10));
    req.destroy();
    expect(await gone).toBe('gone');
    while (busy() > 0) await new Promise((r) => setTimeout(r, 10));
    // a killed invocation's container is discarded, never reused
    expect(h.server.backend.functions.stats().find((f) => f.name === 'hang')?.containers).toMatchObject({ busy: 0, idle: 0 });
  });
});

describe('restarts', () => {
  test('an invocation job a restart finds running is failed (Unavailable), not run again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-fn-restart-'));
    const backend = await unwrap(
      openMemoryBackend({ authorize: ownerAuthorizer, authorizeFunction: serviceFunctionAuthorizer, run: shell }),
    );
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}` };
    try {
      await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: new Uint8Array([1]) }));
      const first = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      const url = await first.listen();
      const fn = { image: 'busybox', cmd: 'sleep 600' };
      await fetch(`${url}/v1/functions/nap`, {
        method: 'PUT',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify(fn),
      });
      const job = (await (await fetch(`${url}/v1/functions/nap/invoke?async`, { method: 'POST', headers })).json()) as Json;
      while (first.db.jobs.get(String(job.id))?.state !== 'running') await new Promise((r) => setTimeout(r, 10));
      await first.close(); // the process goes with the job running
      const second = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      const after = await second.queue.waitFor(String(job.id), 10_000);
      expect(after).toMatchObject({ state: 'failed', error: { tag: 'Unavailable' } });
      expect(after?.result).toBeUndefined();
      await second.close();
    } finally {
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('OpenAPI', () => {
  test('the function routes are in the document, which stays valid', async () => {
    const doc = await body(await h.call('/openapi.json', { token: null }));
    await SwaggerParser.validate(structuredClone(doc) as never);
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/functions',
        '/v1/functions/{name}',
        '/v1/functions/{name}/invoke',
        '/v1/functions/{name}/logs',
      ]),
    );
    const put = doc.paths['/v1/functions/{name}'].put.requestBody.content['application/json'].schema;
    expect(put.additionalProperties).toBe(false);
    expect(Object.keys(put.properties)).toEqual(expect.arrayContaining(['image', 'argv', 'cmd', 'limits', 'reuse', 'public']));
    const inv = doc.paths['/v1/functions/{name}/invoke'].post;
    expect(Object.keys(inv.requestBody.content)).toContain('application/octet-stream');
    expect(Object.keys(inv.responses['200'].headers)).toContain('x-lessl-exit-code');
  });
});
