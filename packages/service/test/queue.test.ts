/**
 * The queue and the reaper over the memory backend: FIFO under a concurrency limit, cancelling
 * a queued task, the TTL reaper (containers, volumes and results removed, task marked expired,
 * events), and the operator's maximum for daemons without a ttl.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap, type LesslEvent } from '@lessl/core';
import { Registry } from '@lessl/level';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer, type TaskRecord } from '@lessl/service';
import { ADMIN_TOKEN, settle, shell, start, type Harness } from './helpers.js';

let h: Harness;
beforeAll(async () => {
  h = await start({ concurrency: 1, policy: { maxTtl: 7200, allowNetworks: ['127.0.0.1/32'] } as never });
});
afterAll(async () => {
  await h.close();
});

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const submit = async (spec: unknown): Promise<Json> =>
  (await (await h.call('/v1/tasks', { method: 'POST', json: spec })).json()) as Json;

describe('the queue', () => {
  test('jobs run FIFO, one at a time under concurrency 1; a queued task can be deleted (its job is cancelled)', async () => {
    const jobs = [];
    for (const i of [1, 2, 3, 4]) jobs.push(await submit({ image: 'busybox', cmd: [`sleep 0.2; echo ${i}`] }));
    expect((await h.call(`/v1/tasks/${jobs[3].tasks[0]}`, { method: 'DELETE' })).status).toBe(204);
    const done = [];
    for (const j of jobs.slice(0, 3)) done.push(await settle(h, j.id));
    const cancelled = await settle(h, jobs[3].id);
    expect(cancelled.state).toBe('cancelled');
    const rec = done.map((j) => h.server.db.jobs.get(String(j.id)));
    // each started after the previous one ended
    for (let i = 1; i < rec.length; i++)
      expect(Date.parse(rec[i]?.started ?? '')).toBeGreaterThanOrEqual(Date.parse(rec[i - 1]?.ended ?? ''));
    expect(rec.map((j) => j?.state)).toEqual(['done', 'done', 'done']);
  });

  test('deleting a running task kills it and cancels nothing else', async () => {
    const j = await submit({ image: 'busybox', cmd: ['sleep 30', 'echo never'] });
    for (;;) {
      const t = (await (await h.call(`/v1/tasks/${j.tasks[0]}`)).json()) as Json;
      if (t.commands[0].state === 'running') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await h.call(`/v1/tasks/${j.tasks[0]}`, { method: 'DELETE' })).status).toBe(204);
    const after = await settle(h, j.id);
    expect(['done', 'cancelled']).toContain(after.state);
    expect(h.registry.scan('').filter((e) => e.id.name.startsWith(j.tasks[0]))).toEqual([]);
    // the queue moves on
    const next = await (
      await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', cmd: ['echo next'] } })
    ).json();
    expect((next as Json).state).toBe('exited');
  });
});

describe('restarts', () => {
  test('a removal a crash interrupted is finished at the next start', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-restart-'));
    const registry = await Registry.open({ memory: true });
    const backend = await unwrap(openMemoryBackend({ authorize: ownerAuthorizer, run: shell, registry }));
    try {
      await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: new Uint8Array([1]) }));
      const first = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      const url = await first.listen();
      const r = await fetch(`${url}/v1/tasks?wait=10`, {
        method: 'POST',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ image: 'busybox', daemon: true, cmd: ['echo up'] }),
      });
      const t = (await r.json()) as Json;
      const left = () => registry.scan('').filter((e) => e.id.name.startsWith(String(t.id))).length;
      expect(left()).toBeGreaterThan(0);
      // the process died right after it marked the task deleted, before it removed anything
      await first.db.commit({ tasks: [{ ...(first.db.tasks.get(String(t.id)) as TaskRecord), deleted: true }] });
      await first.close();
      const second = await createServer({ backend, data: dir, adminToken: ADMIN_TOKEN });
      while (left() > 0) await new Promise((res) => setTimeout(res, 20));
      await second.close();
    } finally {
      await backend.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the TTL reaper', () => {
  test('an expired task loses its container, volumes and results, is marked expired, with events', async () => {
    const t = (await (
      await h.call('/v1/tasks?wait=10', {
        method: 'POST',
        json: { image: 'busybox', daemon: true, ttl: 1, cmd: ['echo hi'], resources: [{ data: 'x', dest: '/opt/x' }] },
      })
    ).json()) as Json;
    expect(t.state).toBe('running');
    const mine = () =>
      h.registry
        .scan('')
        .filter((e) => e.id.name.startsWith(t.id))
        .map((e) => e.id.kind)
        .sort();
    expect(mine()).toEqual(['executor', 'task', 'task', 'volume']);
    const events: LesslEvent[] = [];
    const off = h.server.backend.events.subscribe({ types: ['deleted'] }, (e) => events.push(e));
    await new Promise((r) => setTimeout(r, Date.parse(t.expires) - Date.now() + 10));
    expect(await h.server.reap()).toBe(1);
    off();
    expect(mine()).toEqual([]);
    expect(events.map((e) => e.id.key).sort()).toEqual(
      [`executor://local/${t.id}`, `task://local/${t.id}.c0`, `task://local/${t.id}.main`, `volume://local/${t.id}.r0`].sort(),
    );
    const after = (await (await h.call(`/v1/tasks/${t.id}`)).json()) as Json;
    expect(after.state).toBe('expired');
    expect(after.commands[0].exitCode).toBe(0);
    expect(await h.server.reap()).toBe(0);
  });

  test('a task that failed to start keeps no element past its ttl', async () => {
    const job = await submit({
      image: 'busybox',
      ttl: 1,
      cmd: ['true'],
      resources: [{ src: 'http://127.0.0.1:1/x', dest: '/opt' }],
    });
    const done = await settle(h, job.id);
    expect(done.state).toBe('failed');
    const t = (await (await h.call(`/v1/tasks/${job.tasks[0]}`)).json()) as Json;
    expect(t.state).toBe('failed');
    expect(t.expires).not.toBeNull();
  });

  test("a daemon without a ttl gets the operator's maximum", async () => {
    const t = (await (
      await h.call('/v1/tasks?wait=10', { method: 'POST', json: { image: 'busybox', daemon: true } })
    ).json()) as Json;
    expect(Date.parse(t.expires) - Date.parse(t.started)).toBe(7200 * 1000);
    const over = await h.call('/v1/tasks', { method: 'POST', json: { image: 'busybox', daemon: true, ttl: 7201 } });
    expect(over.status).toBe(400);
    await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' });
  });
});

describe('a daemon that is not running', () => {
  test('PUT with start: true creates it again from its stored spec and runs the new commands; without it, 409', async () => {
    const t = (await (
      await h.call('/v1/tasks?wait=10', {
        method: 'POST',
        json: { image: 'busybox', daemon: true, ttl: 1, cmd: ['echo first'], resources: [{ data: 'x', dest: '/opt/x' }] },
      })
    ).json()) as Json;
    await new Promise((r) => setTimeout(r, Date.parse(t.expires) - Date.now() + 10));
    expect(await h.server.reap()).toBeGreaterThanOrEqual(1); // (with other tests' tasks of this server)
    expect(((await (await h.call(`/v1/tasks/${t.id}`)).json()) as Json).state).toBe('expired');
    const refused = await h.call(`/v1/tasks/${t.id}`, { method: 'PUT', json: { cmd: ['echo again'] } });
    expect(refused.status).toBe(409);
    const again = await h.call(`/v1/tasks/${t.id}?wait=10`, { method: 'PUT', json: { cmd: ['echo again'], start: true } });
    expect(again.status).toBe(201);
    const v = (await again.json()) as Json;
    expect(v.state).toBe('running');
    expect(v.commands.map((c: Json) => [c.cmd, c.exitCode, c.output ?? null])).toEqual([
      ['echo first', 0, null], // its output went with the expiry; its exit code stays
      ['echo again', 0, 'again\n'],
    ]);
    expect(h.registry.get(`executor://local/${t.id}`)).toBeDefined();
    expect((await h.call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
  });
});
