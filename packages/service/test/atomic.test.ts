/**
 * Every read-modify-write of the service's records is atomic: many concurrent writers on each
 * table (exec commands appended to one task, idempotency keys, users, daemon restarts) lose
 * nothing, and a restart resumes a task's execs one at a time, in submission order, with the first
 * failure stopping the rest (memory backend, real server on loopback).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { Registry } from '@lessl/level';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer, type LesslServer } from '@lessl/service';
import { ADMIN_TOKEN, settle, shell, start, type Harness } from './helpers.js';

let h: Harness;
// the service's records on disk (classic-level), where a batch takes real time, as in production
const data = mkdtempSync(join(tmpdir(), 'lessl-atomic-'));
beforeAll(async () => {
  h = await start({ concurrency: 8, data });
});
afterAll(async () => {
  await h.close();
  rmSync(data, { recursive: true, force: true });
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;

/** The task's commands as they started (`s<i>`) and ended (`e<i>`), from the durable event log. */
const timeline = async (registry: Registry, task: string): Promise<string[]> => {
  const prefix = `task://local/${task}.c`;
  const out: string[] = [];
  for (const e of await registry.readEvents(1, registry.lastSeq(), 1_000_000)) {
    if (e.type !== 'bound' && e.type !== 'unbound') continue;
    const t = e.detail.task as { key?: string } | string | undefined;
    const key = [e.id.key, typeof t === 'string' ? t : t?.key].find((k) => k?.startsWith(prefix) === true);
    if (key !== undefined) out.push(`${e.type === 'bound' ? 's' : 'e'}${key.slice(prefix.length)}`);
  }
  return out;
};
/** `s0 e0 s1 e1 ...` for commands 0..n-1: each once, one at a time, in order. */
const inOrder = (n: number): string[] => Array.from({ length: n }, (_, i) => [`s${i}`, `e${i}`]).flat();

const daemon = async (harness: Harness): Promise<Json> => {
  const r = await harness.call('/v1/tasks?wait=10', {
    method: 'POST',
    json: { image: 'busybox', daemon: true, cmd: ['echo up'] },
  });
  expect(r.status).toBe(201);
  return body(r);
};

describe('concurrent writers', () => {
  test('concurrent PUTs into one daemon: every command is recorded and run exactly once, in order', async () => {
    const t = await daemon(h);
    const puts = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        h.call(`/v1/tasks/${t.id}`, { method: 'PUT', json: { cmd: [`echo p${i}a`, `echo p${i}b`] } }),
      ),
    );
    expect(puts.map((r) => r.status)).toEqual(Array(8).fill(202));
    const jobs = await Promise.all(puts.map(body));
    for (const j of jobs) expect((await settle(h, j.id)).status).toBe(303);
    const v = await body(await h.call(`/v1/tasks/${t.id}`));
    expect(v.commands).toHaveLength(1 + 16);
    // each PUT's two commands sit side by side where its job says, each ran once and said its own line
    for (const [i, j] of jobs.entries()) {
      const from = Number(j.exec?.from ?? v.commands.findIndex((c: Json) => c.cmd === `echo p${i}a`));
      expect(v.commands.slice(from, from + 2).map((c: Json) => [c.cmd, c.exitCode, c.output])).toEqual([
        [`echo p${i}a`, 0, `p${i}a\n`],
        [`echo p${i}b`, 0, `p${i}b\n`],
      ]);
    }
    expect(await timeline(h.registry, t.id)).toEqual(inOrder(17));
    await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' });
  });

  test('sequential PUTs racing the runner: none is lost', async () => {
    const t = await daemon(h);
    const jobs: Json[] = [];
    for (let i = 0; i < 20; i++)
      jobs.push(await body(await h.call(`/v1/tasks/${t.id}`, { method: 'PUT', json: { cmd: [`echo s${i}`] } })));
    for (const j of jobs) expect((await settle(h, j.id)).status).toBe(303);
    const v = await body(await h.call(`/v1/tasks/${t.id}`));
    expect(v.commands.map((c: Json) => [c.cmd, c.exitCode])).toEqual([
      ['echo up', 0],
      ...Array.from({ length: 20 }, (_, i) => [`echo s${i}`, 0]),
    ]);
    expect(await timeline(h.registry, t.id)).toEqual(inOrder(21));
    await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' });
  });

  test('concurrent retries of one Idempotency-Key make one job', async () => {
    const json = { image: 'busybox', task_name: 'idem-race', cmd: ['echo once'] };
    const rs = await Promise.all(
      Array.from({ length: 8 }, () => h.call('/v1/tasks', { method: 'POST', json, headers: { 'idempotency-key': 'race-1' } })),
    );
    const ids = new Set((await Promise.all(rs.map(body))).map((j) => j.id));
    expect(ids.size).toBe(1);
    const tasks = await body(await h.call('/v1/tasks?name=idem-race'));
    expect(tasks.items).toHaveLength(1);
  });

  test('concurrent adds of one user: one is made (201), the others are 409; its token works', async () => {
    const rs = await Promise.all(
      Array.from({ length: 8 }, () => h.call('/v1/users', { method: 'POST', json: { name: 'dora' }, token: ADMIN_TOKEN })),
    );
    expect(rs.map((r) => r.status).sort()).toEqual([201, ...Array(7).fill(409)]);
    const made = await body(rs.find((r) => r.status === 201) as Response);
    expect((await h.call('/v1/tasks', { token: made.token })).status).toBe(200);
    expect([...h.server.db.tokens.values()].filter((u) => u === 'dora')).toHaveLength(1);
  });

  test('concurrent PUTs with start: true into a daemon that ended: one restart, every command runs once in the new container', async () => {
    const t = await body(
      await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', daemon: true, ttl: 1, cmd: ['echo up'] } }),
    );
    // its ttl passes: the reaper removes its container, the task is expired
    await new Promise((r) => setTimeout(r, Date.parse(t.expires) - Date.now() + 10));
    await h.server.reap();
    expect((await body(await h.call(`/v1/tasks/${t.id}`))).state).toBe('expired');
    const puts = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        h.call(`/v1/tasks/${t.id}`, { method: 'PUT', json: { cmd: [`echo r${i}`], start: true } }),
      ),
    );
    expect(puts.map((r) => r.status)).toEqual(Array(6).fill(202));
    for (const j of await Promise.all(puts.map(body))) expect((await settle(h, j.id)).status).toBe(303);
    const v = await body(await h.call(`/v1/tasks/${t.id}`));
    expect(v.state).toBe('running');
    expect(v.commands.slice(1).map((c: Json) => [c.exitCode, c.output])).toEqual(
      Array.from({ length: 6 }, () => [0, expect.stringMatching(/^r\d\n$/)]),
    );
    // made twice in all: at the first start and at the one restart
    const events = await h.registry.readEvents(1, h.registry.lastSeq(), 1_000_000);
    expect(events.filter((e) => e.type === 'created' && e.id.key === `executor://local/${t.id}`)).toHaveLength(2);
    await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' });
  });
});

describe('a restart', () => {
  test("a task's execs resume one at a time in submission order; the first failure stops the rest", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-atomic-'));
    const registry = await Registry.open({ memory: true });
    const backend = await unwrap(openMemoryBackend({ authorize: ownerAuthorizer, run: shell, registry }));
    const serve = (): Promise<LesslServer> => createServer({ backend, data: dir, adminToken: ADMIN_TOKEN, concurrency: 6 });
    const call = (url: string, path: string, json?: unknown): Promise<Response> =>
      fetch(`${url}${path}`, {
        method: json === undefined ? 'GET' : path.includes('/v1/tasks/') ? 'PUT' : 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        redirect: 'manual',
        ...(json === undefined ? {} : { body: JSON.stringify(json) }),
      });
    try {
      await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: new Uint8Array([1]) }));
      // 1. a daemon; a long command running, nine more queued behind it (the fourth fails)
      const first = await serve();
      let url = await first.listen();
      const t = await body(await call(url, '/v1/tasks?wait=10', { image: 'busybox', daemon: true, cmd: ['echo up'] }));
      const cmds = ['sleep 1', 'echo 2', 'exit 3', 'echo 4', 'echo 5', 'echo 6', 'echo 7', 'echo 8', 'echo 9', 'echo 10'];
      const jobs: Json[] = [];
      for (const cmd of cmds) jobs.push(await body(await call(url, `/v1/tasks/${t.id}`, { cmd: [cmd] })));
      while (first.db.tasks.get(String(t.id))?.commands[1]?.state !== 'running') await new Promise((r) => setTimeout(r, 10));
      // 2. the service goes away with jobs running and queued (close() abandons them, as kill -9 would)
      expect([...first.db.jobs.values()].filter((j) => j.state === 'running').length).toBeGreaterThan(1);
      await first.close();
      // 3. a restart over the same data resumes them
      const second = await serve();
      url = await second.listen();
      const final: Json[] = [];
      for (const j of jobs)
        for (;;) {
          const r = await call(url, `/v1/jobs/${j.id}`);
          const v = await body(r);
          if (r.status === 303 || ['failed', 'cancelled'].includes(v.state)) {
            final.push({ status: r.status, state: v.state });
            break;
          }
          await new Promise((res) => setTimeout(res, 20));
        }
      expect(final.every((f) => f.status === 303)).toBe(true);
      const v = await body(await call(url, `/v1/tasks/${t.id}`));
      expect(v.commands.map((c: Json) => [c.cmd, c.state, c.exitCode])).toEqual([
        ['echo up', 'exited', 0],
        ['sleep 1', 'exited', 0],
        ['echo 2', 'exited', 0],
        ['exit 3', 'exited', 3],
        ...cmds.slice(3).map((cmd) => [cmd, 'skipped', null]),
      ]);
      expect(await timeline(registry, String(t.id))).toEqual(inOrder(4));
      await second.close();
    } finally {
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
