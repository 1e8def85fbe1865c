// A user leaves (DELETE /v1/users/{name}), over the memory backend: one leave job removes everything
// the user owns (tokens first, jobs, tasks, functions, images, volumes), reports it, keeps the events;
// the user is refused at once (401) and its name cannot be taken again while the job runs (409).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { createServer } from '@lessl/service';
import type { FakeProcess } from '@lessl/memory';
import { ADMIN_TOKEN, owned, settle, shell, start, type Harness } from './helpers.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;

/** `stubborn`: runs until killed, then holds its end until the test opens the gate (so a removal is seen under way). */
let openGate: () => void = () => undefined;
let gate = Promise.resolve();
const run: FakeProcess = async (spec, io) => {
  if (spec.cmd.at(-1) !== 'stubborn') return shell(spec, io);
  await io.sleep(3_600_000);
  await gate;
  return 137;
};

let h: Harness;
beforeEach(async () => {
  gate = new Promise<void>((r) => (openGate = r));
  h = await start({ run, concurrency: 1 });
});
afterEach(async () => {
  openGate();
  await h.close();
});

/** ann's belongings: a running task (stubborn), a queued one, a function, an image, a volume; bob's task. */
const belongings = async (): Promise<{ running: string; queued: string; queuedJob: string; bobs: string }> => {
  const sub = async (cmd: string, token = h.tokens.ann): Promise<Json> =>
    body(await h.call('/v1/tasks', { method: 'POST', token, json: { image: 'busybox', cmd: [cmd] } }));
  const running = await sub('stubborn');
  for (;;) {
    const t = await body(await h.call(`/v1/tasks/${running.tasks[0]}`));
    if (t.state === 'running') break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const queued = await sub('echo queued');
  expect((await h.call('/v1/functions/annfn', { method: 'PUT', json: { image: 'busybox', cmd: 'echo fn' } })).status).toBe(201);
  const b = h.server.backend;
  await unwrap(b.stores.image.create({ id: 'image://local/annimg', data: new Uint8Array([9]), ro: owned('ann') }));
  await unwrap(b.stores.volume.create({ id: 'volume://local/annvol', ro: owned('ann') }));
  await unwrap(b.stores.volume.create({ id: 'volume://local/bobvol', ro: owned('bob') }));
  const bobs = await sub('echo bob', h.tokens.bob);
  return {
    running: String(running.tasks[0]),
    queued: String(queued.tasks[0]),
    queuedJob: String(queued.id),
    bobs: String(bobs.id),
  };
};

const leave = (name: string, token = ADMIN_TOKEN, query = ''): Promise<Response> =>
  h.call(`/v1/users/${name}${query}`, { method: 'DELETE', token });

describe('DELETE /v1/users/{name}', () => {
  test('removes everything the user owns as one job, reports it, keeps the events; 401 at once, 409 on re-create meanwhile', async () => {
    const { running, queued, queuedJob, bobs } = await belongings();
    const before = h.registry.lastSeq();

    const r = await leave('ann');
    expect(r.status).toBe(202);
    const job = await body(r);
    expect(r.headers.get('location')).toBe(`/v1/jobs/${job.id}`);
    expect(job).toMatchObject({ kind: 'leave', state: 'running', leave: { user: 'ann' } });
    expect(job.leave.removed.tokens).toHaveLength(1);
    // the queued job went with the acceptance too: it is never claimed
    expect(job.leave.removed.jobs).toEqual([queuedJob]);
    expect((await body(await h.call(`/v1/jobs/${queuedJob}`, { token: ADMIN_TOKEN }))).state).toBe('cancelled');
    // the tokens went with the acceptance: ann is refused at once, and the name stays taken while the job runs
    expect((await h.call('/v1/whoami')).status).toBe(401);
    expect((await h.call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name: 'ann' } })).status).toBe(409);
    // a second DELETE while it runs answers the same job
    expect((await body(await leave('ann'))).id).toBe(job.id);
    expect((await body(await h.call(`/v1/jobs/${job.id}`, { token: ADMIN_TOKEN }))).state).toBe('running');

    openGate(); // the stubborn task may end now
    const done = await settle(h, String(job.id), ADMIN_TOKEN);
    expect(done).toMatchObject({ status: 200, state: 'done', kind: 'leave', location: null, error: null });
    const removed = done.leave.removed as Record<string, string[]>;
    expect([...removed.tasks].sort()).toEqual([queued, running].sort());
    expect(removed.jobs).toHaveLength(2);
    expect(removed).toMatchObject({
      functions: ['annfn'],
      images: ['image://local/annimg'],
      volumes: ['volume://local/annvol'],
      hosts: [],
    });
    expect(done.leave.failed).toEqual([]);

    // nothing of ann is left: the user, its records, its elements; bob's things are untouched
    const users = (await body(await h.call('/v1/users', { token: ADMIN_TOKEN }))) as Json[];
    expect(users.map((u) => u.name).sort()).toEqual(['admin', 'bob']);
    expect([...h.server.db.tasks.values()].filter((t) => t.owner === 'ann')).toEqual([]);
    expect([...h.server.db.jobs.values()].filter((j) => j.owner === 'ann')).toEqual([]);
    const b = h.server.backend;
    for (const kind of ['task', 'volume', 'image', 'executor'] as const)
      expect((await unwrap(b.stores[kind].list({ store: 'local', ro: { owner: 'ann' } }))).map((e) => e.id.key)).toEqual([]);
    expect((await unwrap(b.functions.list())).map((f) => f.name)).toEqual([]);
    expect((await unwrap(b.stores.volume.list({ store: 'local', ro: { owner: 'bob' } }))).length).toBe(1);
    expect((await settle(h, bobs, h.tokens.bob)).state).toBe('done');

    // the events stay (audit): those before the removal, and the removal's own
    const events = await h.registry.readEvents(1, h.registry.lastSeq(), 100_000);
    expect(events.filter((e) => e.seq <= before).some((e) => e.id.key === `executor://local/${running}`)).toBe(true);
    expect(events.some((e) => e.type === 'deleted' && e.id.key === 'image://local/annimg')).toBe(true);

    // the name is free again; a new ann owns nothing of the old one
    expect((await h.call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name: 'ann' } })).status).toBe(201);
    expect((await leave('nobody')).status).toBe(404);
  });

  test('a user may remove itself (and wait for it); others may not; the built-in admin stays', async () => {
    expect((await leave('bob', h.tokens.ann)).status).toBe(403);
    expect((await leave('admin')).status).toBe(409);
    openGate();
    const r = await leave('ann', h.tokens.ann, '?wait=30');
    expect(r.status).toBe(200);
    expect(await body(r)).toMatchObject({ kind: 'leave', state: 'done', leave: { user: 'ann', failed: [] } });
    expect((await h.call('/v1/whoami')).status).toBe(401);
    expect((await h.call('/v1/whoami', { token: h.tokens.bob })).status).toBe(200);
  });

  test('what cannot be removed fails the job, named; the user stays (refused) and a DELETE again finishes it', async () => {
    openGate();
    const b = h.server.backend;
    // ann's volume, mounted in an executor made through the SDK (no service task of hers: it stays)
    await unwrap(b.stores.volume.create({ id: 'volume://local/held', ro: owned('ann') }));
    let hd = await unwrap(b.composer.handle('executor://local/holder'));
    hd = await unwrap(b.composer.join(hd, 'image://local/busybox'));
    hd = await unwrap(b.composer.join(hd, 'volume://local/held', { mountpoint: '/data', readOnly: false }));
    expect((await unwrap(b.composer.commit(hd))).committed).toBe(true);

    const first = await body(await leave('ann', ADMIN_TOKEN, '?wait=30'));
    expect(first).toMatchObject({ state: 'failed', error: { tag: 'Unavailable' }, leave: { user: 'ann' } });
    expect(first.leave.failed).toEqual([{ kind: 'volumes', id: 'volume://local/held', error: expect.any(String) }]);
    expect((await h.call('/v1/whoami')).status).toBe(401);
    expect((await h.call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name: 'ann' } })).status).toBe(409);

    await b.teardown('executor://local/holder'); // the volume is free again
    const again = await body(await leave('ann', ADMIN_TOKEN, '?wait=30'));
    expect(again.id).not.toBe(first.id);
    expect(again).toMatchObject({ state: 'done', leave: { removed: { volumes: ['volume://local/held'] }, failed: [] } });
    expect((await h.call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name: 'ann' } })).status).toBe(201);
  });

  test('the job survives a restart of the service: resumed, it does what is left, each removal once', async () => {
    await h.close();
    const dir = mkdtempSync(join(tmpdir(), 'lessl-leave-'));
    h = await start({ run, concurrency: 1, data: dir });
    const { running, queued } = await belongings();
    const job = await body(await leave('ann'));
    // the service stops while the removal waits for the stubborn task: the job is left running, the user leaving
    await h.server.close();
    expect(h.server.db.jobs.get(String(job.id))?.state).toBe('running');
    openGate();
    // a new service over the same records and backend resumes the job
    const again = await createServer({
      data: dir,
      backend: h.server.backend,
      adminToken: ADMIN_TOKEN,
      reapIntervalMs: 3_600_000,
    });
    try {
      expect(again.db.users.get('ann')?.leaving).toBe(job.id);
      const done = await again.queue.waitFor(String(job.id), 30_000);
      expect(done?.state).toBe('done');
      const removed = done?.leave?.removed;
      expect([...(removed?.tasks ?? [])].sort()).toEqual([queued, running].sort());
      expect(removed).toMatchObject({
        functions: ['annfn'],
        images: ['image://local/annimg'],
        volumes: ['volume://local/annvol'],
      });
      expect(again.db.users.has('ann')).toBe(false);
      const b = again.backend;
      for (const kind of ['task', 'volume', 'image'] as const)
        expect(await unwrap(b.stores[kind].list({ store: 'local', ro: { owner: 'ann' } }))).toEqual([]);
    } finally {
      await again.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
