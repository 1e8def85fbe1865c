/**
 * Per-user quotas and the rate limit, on a real server on loopback over the memory backend: each
 * quota refused at its limit (429, Retry-After, the problem naming it) with nothing made, a freed
 * slot usable again, concurrent submits against the last slots, per-user values over REST, the
 * rate limit per user with /healthz exempt, and the refusals on /metrics. One case runs on the
 * Docker engine (take /tmp/lessl-docker.lock): image bytes as the engine measures them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test, vi } from 'vitest';
import { LesslError } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer } from '@lessl/service';
import { ADMIN_TOKEN, start, type Harness } from './helpers.js';

/** A daemon task: it stays running (and holds a slot) until deleted. */
const DAEMON = { image: 'busybox', daemon: true };
/** A daemon task with one inline file (a per-task volume: a tar of one header, one block and the end, 2048 bytes). */
const WITH_FILE = { ...DAEMON, resources: [{ data: 'x'.repeat(100), dest: '/opt/a.txt' }] };

type Json = Record<string, unknown>;

/** A 429 with Retry-After and the problem naming the quota; answers the body. */
const refused = async (r: Response, quota: string, retryAfter = '5'): Promise<Json> => {
  const body = (await r.json()) as Json;
  expect(r.status, JSON.stringify(body)).toBe(429);
  expect(r.headers.get('retry-after')).toBe(retryAfter);
  expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(body).toMatchObject({ status: 429, quota, limit: expect.any(Number), usage: expect.any(Number) });
  expect(String(body.detail)).toContain(quota);
  return body;
};

/** The ids of the caller's tasks (default: ann's). */
const taskIds = async (h: Harness, token?: string): Promise<string[]> => {
  const r = await h.call('/v1/tasks?limit=100', token === undefined ? {} : { token });
  return ((await r.json()) as { items: { id: string }[] }).items.map((t) => t.id);
};

const submit = (h: Harness, json: unknown, token?: string): Promise<Response> =>
  h.call('/v1/tasks', { method: 'POST', json, ...(token === undefined ? {} : { token }) });

/** `GET /v1/users/{name}` as the admin. */
const userView = async (h: Harness, name: string): Promise<Json> =>
  (await (await h.call(`/v1/users/${name}`, { token: ADMIN_TOKEN })).json()) as Json;

/** The value of `lessl_quota_refusals_total{reason}` on /metrics. */
const refusals = async (h: Harness, reason: string): Promise<number> => {
  const text = await (await h.call('/metrics', { token: null })).text();
  const m = new RegExp(`^lessl_quota_refusals_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text);
  return Number(m?.[1] ?? Number.NaN);
};

describe('quotas of tasks and jobs', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start({ policy: { quotas: { runningTasks: 3, queuedJobs: 50 } } });
  });
  afterAll(async () => {
    await h.close();
  });

  test('runningTasks: refused at the limit with 429 and nothing made; a batch over it makes none; a freed slot is usable', async () => {
    for (let i = 0; i < 2; i++) expect((await submit(h, DAEMON)).status).toBe(202);
    // a batch of two with one slot free: refused whole
    const body = await refused(await submit(h, [DAEMON, DAEMON]), 'runningTasks');
    expect(body).toMatchObject({ limit: 3, usage: 2 });
    expect(await taskIds(h)).toHaveLength(2);
    expect((await submit(h, DAEMON)).status).toBe(202);
    await refused(await submit(h, DAEMON), 'runningTasks');
    expect(await taskIds(h)).toHaveLength(3);
    // bob holds his own slots
    expect((await submit(h, DAEMON, h.tokens.bob)).status).toBe(202);
    // a deleted task frees its slot
    const [first] = await taskIds(h);
    expect((await h.call(`/v1/tasks/${first}`, { method: 'DELETE' })).status).toBe(204);
    expect((await submit(h, DAEMON)).status).toBe(202);
    expect(await refusals(h, 'running_tasks')).toBe(2);
    const v = await userView(h, 'ann');
    expect(v).toMatchObject({ quotas: { runningTasks: 3 }, own: {}, usage: { runningTasks: 3, queuedJobs: 0 } });
    for (const id of await taskIds(h)) await h.call(`/v1/tasks/${id}`, { method: 'DELETE' });
  });

  test('20 concurrent submits against 5 free slots make exactly 5 tasks', async () => {
    await h.call('/v1/users/bob', { method: 'PATCH', token: ADMIN_TOKEN, json: { quotas: { runningTasks: 6 } } });
    const answers = await Promise.all(Array.from({ length: 20 }, () => submit(h, DAEMON, h.tokens.bob)));
    const codes = answers.map((r) => r.status).sort();
    expect(codes.filter((c) => c === 202)).toHaveLength(5);
    expect(codes.filter((c) => c === 429)).toHaveLength(15);
    expect(await taskIds(h, h.tokens.bob)).toHaveLength(6);
    for (const id of await taskIds(h, h.tokens.bob)) await h.call(`/v1/tasks/${id}`, { method: 'DELETE', token: h.tokens.bob });
  });
});

describe('queued jobs', () => {
  let h: Harness;
  beforeAll(async () => {
    // one job at a time: the first sleeps, the others wait in the queue
    h = await start({ concurrency: 1, policy: { quotas: { queuedJobs: 2 } } });
  });
  afterAll(async () => {
    await h.close();
  });

  test('queuedJobs: the third waiting job is refused; a cancelled one frees its place', async () => {
    const running = await submit(h, { image: 'busybox', cmd: ['sleep 3600'] });
    expect(running.status).toBe(202);
    const job = ((await running.json()) as { id: string }).id;
    for (let i = 0; i < 50 && h.server.db.jobs.get(job)?.state !== 'running'; i++) await new Promise((r) => setTimeout(r, 20));
    const waiting: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await submit(h, { image: 'busybox', cmd: ['true'] });
      expect(r.status).toBe(202);
      waiting.push(((await r.json()) as { tasks: string[] }).tasks[0] ?? '');
    }
    const body = await refused(await submit(h, { image: 'busybox', cmd: ['true'] }), 'queuedJobs');
    expect(body).toMatchObject({ limit: 2, usage: 2 });
    // an invocation as a job waits in the same queue
    const fn = { image: 'busybox', argv: ['echo', 'x'] };
    expect((await h.call('/v1/functions/echo', { method: 'PUT', json: fn })).status).toBe(201);
    await refused(await h.call('/v1/functions/echo/invoke?async', { method: 'POST' }), 'queuedJobs');
    expect(await taskIds(h)).toHaveLength(3);
    // deleting a queued job's task cancels the job: its place is free
    expect((await h.call(`/v1/tasks/${waiting[0]}`, { method: 'DELETE' })).status).toBe(204);
    expect((await submit(h, { image: 'busybox', cmd: ['true'] })).status).toBe(202);
    expect(await refusals(h, 'queued_jobs')).toBe(2);
    for (const id of await taskIds(h)) await h.call(`/v1/tasks/${id}`, { method: 'DELETE' });
  });
});

describe('a daemon’s commands', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start({ concurrency: 1, policy: { quotas: { queuedJobs: 1 } } });
  });
  afterAll(async () => {
    await h.close();
  });

  test('a PUT of more commands is a queued job of the task’s owner: refused past queuedJobs', async () => {
    const d = await h.call('/v1/tasks?wait=10', { method: 'POST', json: { ...DAEMON, cmd: ['echo up'] } });
    expect(d.status).toBe(201);
    const daemon = ((await d.json()) as { id: string }).id;
    // the one job slot is taken by a long task: what follows waits in the queue
    const sleeper = (await (await submit(h, { image: 'busybox', cmd: ['sleep 3600'] })).json()) as { id: string };
    for (let i = 0; i < 50 && h.server.db.jobs.get(sleeper.id)?.state !== 'running'; i++)
      await new Promise((r) => setTimeout(r, 20));
    const put = (): Promise<Response> => h.call(`/v1/tasks/${daemon}`, { method: 'PUT', json: { cmd: ['echo more'] } });
    expect((await put()).status).toBe(202);
    const body = await refused(await put(), 'queuedJobs');
    expect(body).toMatchObject({ limit: 1, usage: 1 });
    // the admin's PUT into ann's task is counted against ann
    await refused(
      await h.call(`/v1/tasks/${daemon}`, { method: 'PUT', token: ADMIN_TOKEN, json: { cmd: ['echo x'] } }),
      'queuedJobs',
    );
    for (const id of await taskIds(h)) await h.call(`/v1/tasks/${id}`, { method: 'DELETE' });
  });
});

describe('bytes of images and volumes', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start({ policy: { quotas: { imageBytes: 100, volumeBytes: 5000 } } });
  });
  afterAll(async () => {
    await h.close();
  });

  const upload = (name: string, bytes: number): Promise<Response> =>
    h.call(`/v1/images/${name}?wait=10`, {
      method: 'PUT',
      body: new Uint8Array(bytes),
      headers: { 'content-type': 'application/x-tar' },
    });

  test('imageBytes: an image built past the quota is removed again and fails naming it; at the quota none is built', async () => {
    expect((await upload('one', 60)).status).toBe(201);
    // 60 + 60 > 100: built, then removed; the create failed naming the quota
    const over = await upload('two', 60);
    expect(over.status).toBe(202);
    const v = (await over.json()) as { state: string; error: { detail: string } };
    expect(v.state).toBe('failed');
    expect(v.error.detail).toContain('imageBytes');
    expect(v.error).toMatchObject({ status: 429, tag: 'Unavailable' });
    expect(E.isLeft(await h.server.backend.stores.image.read('image://local/two')())).toBe(true);
    expect((await upload('three', 40)).status).toBe(201); // exactly at the quota
    const body = await refused(await upload('four', 1), 'imageBytes');
    expect(body).toMatchObject({ limit: 100, usage: 100 });
    expect((await userView(h, 'ann')).usage).toMatchObject({ imageBytes: 100 });
    // removing one frees its bytes
    expect((await h.call('/v1/images/one', { method: 'DELETE' })).status).toBe(204);
    expect((await upload('four', 1)).status).toBe(201);
    expect(await refusals(h, 'image_bytes')).toBe(2);
  });

  test('volumeBytes: resource files of tasks count (queued or running); past the quota the submit is refused', async () => {
    expect((await submit(h, WITH_FILE)).status).toBe(202);
    expect((await submit(h, WITH_FILE)).status).toBe(202);
    expect((await userView(h, 'ann')).usage).toMatchObject({ volumeBytes: 4096 });
    const body = await refused(await submit(h, WITH_FILE), 'volumeBytes');
    expect(body).toMatchObject({ limit: 5000, usage: 4096 });
    expect(await taskIds(h)).toHaveLength(2);
    // a task without files takes no volume bytes
    expect((await submit(h, DAEMON)).status).toBe(202);
    expect(await refusals(h, 'volume_bytes')).toBe(1);
  });
});

describe('per-user values and admins', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start();
  });
  afterAll(async () => {
    await h.close();
  });

  test('PATCH sets a user’s own quotas, null returns one (or all) to the operator’s; GET shows them and the usage', async () => {
    const v0 = await userView(h, 'ann');
    expect(v0).toMatchObject({
      name: 'ann',
      admin: false,
      exempt: false,
      quotas: { runningTasks: 32, queuedJobs: 256, requestsPerSecond: 50, burst: 100, imageBytes: 20 * 1024 ** 3 },
      own: {},
      usage: { runningTasks: 0, queuedJobs: 0, imageBytes: 0, volumeBytes: 0 },
    });
    const set = await h.call('/v1/users/ann', {
      method: 'PATCH',
      token: ADMIN_TOKEN,
      json: { quotas: { runningTasks: 0, burst: 500 } },
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ quotas: { runningTasks: 0, burst: 500 }, own: { runningTasks: 0, burst: 500 } });
    await refused(await submit(h, DAEMON), 'runningTasks');
    // the user sees their own; another user's is 404 to them
    expect((await h.call('/v1/users/ann')).status).toBe(200);
    expect((await h.call('/v1/users/ann', { token: h.tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/users/nobody', { token: ADMIN_TOKEN })).status).toBe(404);
    expect((await h.call('/v1/users/bob', { method: 'PATCH', json: { quotas: null } })).status).toBe(403);
    const back = await h.call('/v1/users/ann', { method: 'PATCH', token: ADMIN_TOKEN, json: { quotas: { runningTasks: null } } });
    expect(await back.json()).toMatchObject({ quotas: { runningTasks: 32, burst: 500 }, own: { burst: 500 } });
    expect((await submit(h, DAEMON)).status).toBe(202);
    const all = await h.call('/v1/users/ann', { method: 'PATCH', token: ADMIN_TOKEN, json: { quotas: null } });
    expect(await all.json()).toMatchObject({ quotas: { burst: 100 }, own: {} });
  });

  test('bad values are 400 naming the field; nothing changes', async () => {
    for (const quotas of [{ runningTasks: -1 }, { burst: 0 }, { requestsPerSecond: 0 }, { imageBytes: 1.5 }, { nope: 1 }]) {
      const r = await h.call('/v1/users/bob', { method: 'PATCH', token: ADMIN_TOKEN, json: { quotas } });
      expect(r.status).toBe(400);
      expect(((await r.json()) as { keys: string[] }).keys[0]).toMatch(/^quotas\./);
    }
    expect((await userView(h, 'bob')).own).toEqual({});
  });

  test('admins are held to quotas unless the policy exempts them', async () => {
    await h.call('/v1/users/admin', { method: 'PATCH', token: ADMIN_TOKEN, json: { quotas: { runningTasks: 0 } } });
    await refused(await submit(h, DAEMON, ADMIN_TOKEN), 'runningTasks');
    const x = await start({ policy: { quotas: { runningTasks: 0, exemptAdmins: true } } });
    try {
      expect((await submit(x, DAEMON, ADMIN_TOKEN)).status).toBe(202);
      await refused(await submit(x, DAEMON), 'runningTasks');
      expect(await userView(x, 'admin')).toMatchObject({ exempt: true });
    } finally {
      await x.close();
    }
  });

  test('a user’s own quotas are kept with the user: a restart over the same data has them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-quotas-'));
    const backend = h.server.backend;
    const open = () => createServer({ backend, data: dir, adminToken: ADMIN_TOKEN, reapIntervalMs: 3_600_000 });
    const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
    try {
      const first = await open();
      const url = await first.listen();
      await fetch(`${url}/v1/users`, { method: 'POST', headers, body: JSON.stringify({ name: 'kim' }) });
      const quotas = JSON.stringify({ quotas: { queuedJobs: 3 } });
      expect((await fetch(`${url}/v1/users/kim`, { method: 'PATCH', headers, body: quotas })).status).toBe(200);
      await first.close();
      const second = await open();
      try {
        const v = (await (await fetch(`${await second.listen()}/v1/users/kim`, { headers })).json()) as Json;
        expect(v).toMatchObject({ quotas: { queuedJobs: 3 }, own: { queuedJobs: 3 } });
      } finally {
        await second.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a bad operator quota fails the start with InvalidEntry naming it', async () => {
    const bad = createServer({ policy: { quotas: { runningTasks: -1 } } });
    await expect(bad).rejects.toBeInstanceOf(LesslError);
    await expect(bad).rejects.toMatchObject({ error: { _tag: 'InvalidEntry', keys: ['policy.quotas.runningTasks'] } });
  });
});

describe('the rate limit', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start();
  });
  afterAll(async () => {
    await h.close();
  });

  test('a burst, then 429 with Retry-After and x-ratelimit-*; per user; /healthz and /metrics exempt', async () => {
    // ann: a bucket of 5 refilled every 20 s; bob keeps the default
    await h.call('/v1/users/ann', {
      method: 'PATCH',
      token: ADMIN_TOKEN,
      json: { quotas: { requestsPerSecond: 0.05, burst: 5 } },
    });
    const answers: Response[] = [];
    for (let i = 0; i < 6; i++) answers.push(await h.call('/v1/whoami'));
    expect(answers.slice(0, 5).map((r) => r.status)).toEqual([200, 200, 200, 200, 200]);
    expect(answers[0]?.headers.get('x-ratelimit-limit')).toBe('5');
    expect(answers[4]?.headers.get('x-ratelimit-remaining')).toBe('0');
    const last = answers[5] ?? new Response();
    expect(Number(last.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const body = await refused(last, 'requestsPerSecond', last.headers.get('retry-after') ?? '');
    expect(body).toMatchObject({ limit: 0.05, usage: 5 });
    expect(last.headers.get('x-ratelimit-limit')).toBe('5');
    expect(last.headers.get('x-ratelimit-remaining')).toBe('0');
    expect(last.headers.get('x-ratelimit-reset')).toMatch(/^\d+$/);
    // every route is limited, unknown ones too; bob is not affected; probes are exempt
    expect((await h.call('/v1/tasks')).status).toBe(429);
    expect((await h.call('/v1/whoami', { token: h.tokens.bob })).status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await h.call('/healthz')).status).toBe(200);
    for (let i = 0; i < 10; i++) expect((await h.call('/metrics')).status).toBe(200);
    expect(await refusals(h, 'rate')).toBe(2);
  });

  test('at a rate of one a second, a flood is refused with Retry-After: 1', async () => {
    await h.call('/v1/users/bob', {
      method: 'PATCH',
      token: ADMIN_TOKEN,
      json: { quotas: { requestsPerSecond: 1, burst: 10 } },
    });
    const answers = await Promise.all(Array.from({ length: 40 }, () => h.call('/v1/whoami', { token: h.tokens.bob })));
    const limited = answers.filter((r) => r.status === 429);
    expect(limited.length).toBeGreaterThan(0);
    for (const r of limited) expect(r.headers.get('retry-after')).toBe('1');
    expect(answers.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(10);
  });

  test('the token of a request is looked up once: the rate limit and the authenticated scope share the caller', async () => {
    const tokens = h.server.db.tokens;
    const lookups = vi.spyOn(tokens, 'get');
    try {
      const r = await h.call('/v1/whoami', { token: ADMIN_TOKEN });
      expect(r.status).toBe(200);
      expect(await r.json()).toMatchObject({ name: 'admin' });
      expect(lookups).toHaveBeenCalledTimes(1);
      lookups.mockClear();
      expect((await h.call('/v1/whoami', { token: 'lsl_not-a-token-at-all' })).status).toBe(401);
      expect(lookups).toHaveBeenCalledTimes(1);
    } finally {
      lookups.mockRestore();
    }
  });

  test('requests without a known token are limited by address', async () => {
    const x = await start({ policy: { quotas: { requestsPerSecond: 0.05, burst: 3 } } });
    try {
      const codes: number[] = [];
      for (let i = 0; i < 4; i++) codes.push((await x.call('/v1/whoami', { token: 'lsl_not-a-token-at-all' })).status);
      expect(codes).toEqual([401, 401, 401, 429]);
    } finally {
      await x.close();
    }
  });
});

describe('image and volume bytes on the Docker engine', () => {
  test('an image built past imageBytes is removed from the engine again; within the quota its size is the usage; volumes count', async () => {
    const docker = new Docker();
    const dir = mkdtempSync(join(tmpdir(), 'lessl-quotas-'));
    const rootfs = join(dir, 'rootfs.tar');
    writeFileSync(rootfs, await busyboxRootfsBytes());
    const server = await createServer({
      data: join(dir, 'data'),
      adminToken: ADMIN_TOKEN,
      policy: { quotas: { imageBytes: 1024 } },
    });
    const instance = server.backend.instanceId;
    const images = async (): Promise<number> =>
      (await docker.listImages({ filters: { label: [`lessl.registry=${instance}`] } })).length;
    try {
      const url = await server.listen();
      const headers = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' };
      const create = (name: string): Promise<Response> =>
        fetch(`${url}/v1/images?wait=120`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ name, source: { type: 'path', path: rootfs, format: 'rootfs' } }),
        });
      const over = await create('bb');
      const v = (await over.json()) as { state: string; error: { detail: string } };
      expect(v.state).toBe('failed');
      expect(v.error.detail).toMatch(/^quota imageBytes exceeded: the image took the usage to \d+ bytes of 1024/);
      expect(await images()).toBe(0);
      const user = (): Promise<Json> => fetch(`${url}/v1/users/admin`, { headers }).then((r) => r.json() as Promise<Json>);
      expect(await user()).toMatchObject({ usage: { imageBytes: 0 } });
      // a larger quota of the admin's own: it is made, and its size is what the admin holds
      const quotas = JSON.stringify({ quotas: { imageBytes: 1 << 30 } });
      expect((await fetch(`${url}/v1/users/admin`, { method: 'PATCH', headers, body: quotas })).status).toBe(200);
      const ok = await create('bb2');
      const made = (await ok.json()) as { state: string; size: number };
      expect(ok.status, JSON.stringify(made)).toBe(201);
      expect(made.size).toBeGreaterThan(1024);
      expect(await user()).toMatchObject({ usage: { imageBytes: made.size } });
      expect(await images()).toBe(1);
      // Docker reports no volume sizes: a task's resource volume counts as the tar it was filled with
      const volumes = JSON.stringify({ quotas: { volumeBytes: 3000 } });
      await fetch(`${url}/v1/users/admin`, { method: 'PATCH', headers, body: volumes });
      const task = JSON.stringify({ ...WITH_FILE, image: 'bb2', cmd: ['true'] });
      const first = await fetch(`${url}/v1/tasks?wait=60`, { method: 'POST', headers, body: task });
      expect(first.status).toBe(201);
      expect(await user()).toMatchObject({ usage: { volumeBytes: 2048, runningTasks: 1 } });
      await refused(await fetch(`${url}/v1/tasks`, { method: 'POST', headers, body: task }), 'volumeBytes');
    } finally {
      await server.close();
      await purge(docker, instance);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
