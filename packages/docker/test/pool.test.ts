/**
 * The warm pool on a real engine: one-shot tasks run in containers started ahead of need, one
 * task per container, refilled in the background (after the task, or a second after the take);
 * what does not match takes the cold path; dead or paused idle containers are never handed out; nothing is left after close, a crash or an image delete.
 * It runs twice: warm tasks through the in-container agent, and with exec (`agent: false`).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { eventually, n } from './support.js';

const docker = new Docker();
const BASE = 'image://local/base';

// the whole suite with the in-container agent, and again with exec (`agent: false`, the fallback)
describe.each([true, false])('agent: %s', (agent) => {
  let l: DockerBackend;

  /** The pool containers of a backend's registry. */
  const pooled = async (b: DockerBackend): Promise<Docker.ContainerInfo[]> =>
    docker.listContainers({ all: true, filters: { label: [`lessl.registry=${b.instanceId}`, 'lessl.pool'] } });

  beforeAll(async () => {
    l = await unwrap(openDockerBackend({ agent }));
    await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
  });
  afterAll(async () => {
    await l.close();
    expect(await pooled(l)).toEqual([]);
    await purge(docker, l.instanceId);
  });

  describe('warm pool', () => {
    test('a one-shot task takes a warm container, which is removed after; the pool refills', async () => {
      const stats = await unwrap(l.pool.configure([{ image: BASE, min: 2 }]));
      expect(stats.profiles[0]).toMatchObject({ ready: 2, starting: 0 });
      const before = new Set((await pooled(l)).map((c) => c.Id));
      const r = await unwrap(
        l.run({ image: BASE, spec: { cmd: ['sh', '-c', 'echo warm $GREETING; exit 3'], env: { GREETING: 'hi' } } }),
      );
      expect([r.exitCode, text(r.stdout), r.state]).toEqual([3, 'warm hi\n', 'exited']);
      expect(l.pool.stats()).toMatchObject({ hits: 1, misses: 0 });
      // the container it ran in is gone, and two ready ones are back
      expect(await eventually(async () => (await pooled(l)).length === 2 && l.pool.stats().profiles[0]?.ready === 2)).toBe(true);
      const after = (await pooled(l)).map((c) => c.Id);
      expect(after.filter((id) => before.has(id))).toHaveLength(1);
    });

    test('nothing crosses tasks: each task has a fresh container', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 2 }]));
      const a = await unwrap(l.run({ image: BASE, spec: { cmd: ['sh', '-c', 'echo secret > /tmp/left; cat /tmp/left'] } }));
      expect(text(a.stdout)).toBe('secret\n');
      const b = await unwrap(l.run({ image: BASE, spec: { cmd: ['sh', '-c', 'cat /tmp/left 2>/dev/null || echo clean'] } }));
      expect(text(b.stdout)).toBe('clean\n');
      expect(l.pool.stats().hits).toBeGreaterThanOrEqual(3);
    });

    test('what does not match a profile takes the cold path: other limits, volumes, daemons', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      const { hits, misses } = l.pool.stats();
      const r = await unwrap(l.run({ image: BASE, spec: { cmd: ['echo', 'cold'], limits: { memoryBytes: 64 * 1024 * 1024 } } }));
      expect(text(r.stdout)).toBe('cold\n');
      const vol = `volume://local/${n('v')}`;
      await unwrap(l.stores.volume.create({ id: vol }));
      const v = await unwrap(l.run({ image: BASE, spec: { cmd: ['ls', '/data'] }, volumes: [{ id: vol, mountpoint: '/data' }] }));
      expect(v.exitCode).toBe(0);
      await unwrap(l.stores.volume.delete(vol));
      expect(l.pool.stats()).toMatchObject({ hits, misses });
    });

    test('a taken container is replaced once its task ends, or a second after the take while it runs', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      const { hits } = l.pool.stats();
      // a short task: nothing starts beside it (the engine's container start would slow it down)
      const short = l.run({ image: BASE, spec: { cmd: ['sleep', '0.5'] } })();
      expect(await eventually(() => l.pool.stats().hits === hits + 1, 5_000)).toBe(true);
      expect(l.pool.stats().profiles[0]).toMatchObject({ ready: 0, starting: 0 });
      expect(E.isRight(await short)).toBe(true);
      expect(await eventually(() => l.pool.stats().profiles[0]?.ready === 1)).toBe(true);
      // a long one: its replacement starts while it still runs
      let ended = false;
      const long = l
        .run({ image: BASE, spec: { cmd: ['sleep', '6'] } })()
        .finally(() => {
          ended = true;
        });
      expect(await eventually(() => l.pool.stats().hits === hits + 2, 5_000)).toBe(true);
      expect(await eventually(() => l.pool.stats().profiles[0]?.ready === 1, 6_000)).toBe(true);
      expect(ended).toBe(false);
      const r = await long;
      expect(E.isRight(r) && r.right.exitCode).toBe(0);
    });

    test('a warm container that died or was paused while idle is never handed out; a killed warm task ends its container', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      for (const spoil of ['kill', 'pause'] as const) {
        expect(await eventually(async () => l.pool.stats().profiles[0]?.ready === 1 && (await pooled(l)).length === 1)).toBe(
          true,
        );
        const [idle] = await pooled(l);
        await docker.getContainer(String(idle?.Id))[spoil]();
        const { hits, misses } = l.pool.stats();
        const r = await unwrap(l.run({ image: BASE, spec: { cmd: ['echo', 'still fine'] } }));
        expect(text(r.stdout)).toBe('still fine\n');
        // it ran on the cold path, and the spoilt container is gone
        expect(l.pool.stats()).toMatchObject({ hits, misses: misses + 1 });
        expect(await eventually(async () => !(await pooled(l)).some((c) => c.Id === idle?.Id))).toBe(true);
      }
      expect(await eventually(async () => l.pool.stats().profiles[0]?.ready === 1)).toBe(true);
      const ready = new Set((await pooled(l)).map((c) => c.Id));
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 500);
      const killed = await l.run({ image: BASE, spec: { cmd: ['sleep', '30'] }, signal: ac.signal })();
      expect(E.isLeft(killed) && killed.left._tag).toBe('Aborted');
      expect(await eventually(async () => (await pooled(l)).every((c) => !ready.has(c.Id) || c.State === 'running'))).toBe(true);
      expect(await eventually(async () => (await pooled(l)).filter((c) => ready.has(c.Id)).length === 0)).toBe(true);
    });

    test('an executor that ran warm, then cold, leaves no container once deleted', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      const c = l.composer;
      const x = `executor://local/${n('x')}`;
      const [once, daemon] = [`task://local/${n('t')}`, `task://local/${n('d')}`];
      await unwrap(l.stores.task.create({ id: once, spec: { cmd: ['echo', 'warm'] } }));
      await unwrap(l.stores.task.create({ id: daemon, spec: { cmd: ['sleep', '3600'], daemon: true } }));
      const { hits } = l.pool.stats();
      let h = await unwrap(c.handle(x));
      h = await unwrap(c.bind(await unwrap(c.join(await unwrap(c.join(h, BASE)), once)), once));
      expect((await unwrap(c.commit(h))).committed).toBe(true);
      expect(text((await unwrap(l.tasks.wait(once))).stdout)).toBe('warm\n');
      expect(l.pool.stats().hits).toBe(hits + 1);
      // the same executor, cold now: a daemon gets a container of its own, labelled with the executor
      h = await unwrap(c.handle(x));
      h = await unwrap(c.bind(await unwrap(c.join(await unwrap(c.leave(h, once)), daemon)), daemon));
      expect((await unwrap(c.commit(h))).committed).toBe(true);
      const labelled = () => docker.listContainers({ all: true, filters: { label: [`lessl.id=${x}`] } });
      expect(await labelled()).toHaveLength(1);
      h = await unwrap(c.handle(x));
      expect((await unwrap(c.commit(await unwrap(c.leave(await unwrap(c.leave(h, daemon)), BASE))))).committed).toBe(true);
      await unwrap(l.stores.executor.delete(x));
      expect(await labelled()).toEqual([]);
      await unwrap(l.stores.task.delete(once));
      await unwrap(l.stores.task.delete(daemon));
    });

    test('bad profiles are InvalidEntry or NotFound and change nothing', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      const tag = async (p: unknown): Promise<string> => {
        const r = await l.pool.configure([p as never])();
        return E.isLeft(r) ? r.left._tag : 'Right';
      };
      expect(await tag({ image: BASE, min: -1 })).toBe('InvalidEntry');
      expect(await tag({ image: BASE, min: 2, max: 1 })).toBe('InvalidEntry');
      expect(await tag({ image: 'image://local/nope', min: 1 })).toBe('NotFound');
      expect(await tag({ image: BASE, min: 1, options: { backend: { nope: 1 } } })).toBe('InvalidEntry');
      expect(await tag({ image: BASE, min: 1, limits: { memoryBytes: -5 } })).toBe('InvalidEntry');
      expect(l.pool.stats().profiles).toHaveLength(1);
    });

    test('deleting an image removes its warm containers first; a reopen removes pool containers a crash left', async () => {
      const img = `image://local/${n('img')}`;
      await unwrap(l.stores.image.create({ id: img, parent: BASE }));
      await unwrap(l.pool.configure([{ image: img, min: 2 }]));
      expect(await pooled(l)).toHaveLength(2);
      await unwrap(l.stores.image.delete(img));
      expect(await pooled(l)).toHaveLength(0);

      const location = mkdtempSync(join(tmpdir(), 'lessl-pool-'));
      try {
        const registry = await Registry.open({ location });
        const a = await unwrap(openDockerBackend({ registry, agent }));
        await unwrap(a.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
        await unwrap(a.pool.configure([{ image: BASE, min: 2 }]));
        const instance = a.instanceId;
        // a crash: the registry is closed, the pool's containers are not removed
        await registry.close();
        expect(await pooled(a)).toHaveLength(2);
        const b = await unwrap(openDockerBackend({ registry: { location }, agent }));
        expect(await pooled(b)).toHaveLength(0);
        expect(b.reconciled.orphansRemoved.filter((o) => o.includes('lessl_pool_'))).toHaveLength(2);
        await b.close();
        await purge(docker, instance);
      } finally {
        rmSync(location, { recursive: true, force: true });
      }
    });
  });

  describe('freshness', () => {
    test('images record their last use; purge removes the least recently used that nothing uses', async () => {
      const b = await unwrap(openDockerBackend({ agent }));
      try {
        const base = `image://local/${n('base')}`;
        await unwrap(b.stores.image.create({ id: base, data: await busyboxRootfsBytes() }));
        const [a, used, c, d] = ['a', 'used', 'c', 'd'].map((s) => `image://local/${n(s)}`) as [string, string, string, string];
        await unwrap(b.stores.image.create({ id: a, parent: base }));
        await unwrap(b.stores.image.create({ id: used, parent: base }));
        await unwrap(b.stores.image.create({ id: c, parent: base }));
        await unwrap(b.stores.image.create({ id: d, parent: c }));
        const r = await unwrap(b.run({ image: used, spec: { cmd: ['true'] } }));
        expect(r.exitCode).toBe(0);
        const plan = await unwrap(b.purge({ keepBytes: 0, dryRun: true }));
        expect(plan.removed).toEqual([base, a, c, d, used]);
        expect(typeof (await unwrap(b.stores.image.read(used))).attributes.lastUsed).toBe('string');
        expect((await unwrap(b.purge({ unusedForMs: 3_600_000 }))).removed).toEqual([]);
        const done = await unwrap(b.purge({ keepBytes: 0 }));
        expect(done.removed).toEqual([a, d, used]);
        expect(done.inUse.map((x) => x.id)).toEqual([base, c]);
        expect(E.isLeft(await b.stores.image.read(a)())).toBe(true);
        const bad = await b.purge({ keepBytes: -1 })();
        expect(E.isLeft(bad) && bad.left._tag).toBe('InvalidEntry');
      } finally {
        await b.close();
        await purge(docker, b.instanceId);
      }
    });

    test('a warm task past its deadline is ended whole: no process of it runs on, no output after its end', async () => {
      await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
      expect(await eventually(() => l.pool.stats().profiles[0]?.ready === 1)).toBe(true);
      const { hits } = l.pool.stats();
      const forker = '(while :; do sh -c "echo child; sleep 0.05"; done) & (while :; do echo bg; sleep 0.05; done) & ';
      const r = await unwrap(
        l.run({
          image: BASE,
          keep: true,
          spec: { cmd: ['sh', '-c', `${forker} while :; do echo fg; sleep 0.05; done`], limits: { deadlineMs: 800 } },
        }),
      );
      const task = r.id.key;
      expect([r.reason, l.pool.stats().hits]).toEqual(['deadline', hits + 1]);
      const seen = text(r.stdout);
      expect(seen).toMatch(/fg/);
      // the container it ran in goes; whatever it had running could only have written until then
      expect(await eventually(async () => (await pooled(l)).filter((c) => c.State === 'running').length <= 1)).toBe(true);
      let later = '';
      for await (const c of l.tasks.logs(task)) later += text(c.data);
      expect(later).toBe(seen);
    });
  });
});
