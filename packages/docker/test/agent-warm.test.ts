/**
 * Warm one-shot tasks through the in-container agent, on a real engine: no exec is made, an image
 * without a shell runs warm, the spec's env, cwd and user are honoured, output streams stay apart,
 * exit codes, the deadline and zombies; a warm container killed or paused from outside during a
 * task ends it typed, is discarded, and the next task succeeds. With `agent: false` the pool
 * uses exec (the whole pool suite runs that way in pool-exec.test.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { text, unwrap } from '@lessl/core';
import { BUSYBOX, busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { eventually, n } from './support.js';

const docker = new Docker();
const BASE = 'image://local/base';
const BARE = 'image://local/bare';
let l: DockerBackend;

const pooled = async (b: DockerBackend): Promise<Docker.ContainerInfo[]> =>
  docker.listContainers({ all: true, filters: { label: [`lessl.registry=${b.instanceId}`, 'lessl.pool'] } });

/** Pool containers whose profile has `ready` containers ready. */
const ready = (b: DockerBackend, image: string, count = 1): Promise<boolean> =>
  eventually(() => b.pool.stats().profiles.some((p) => p.image.endsWith(image.split('/').at(-1) ?? '') && p.ready >= count));

/** An image of nothing but busybox as /bin/echo (no shell, no /etc), as tar bytes. */
const bareTar = async (): Promise<Uint8Array> => {
  const p = pack();
  p.entry({ name: 'bin/', type: 'directory', mode: 0o755 });
  p.entry({ name: 'bin/echo', mode: 0o755 }, readFileSync(BUSYBOX));
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
};

/** The engine's exec_create events between `since` (seconds) and now. */
const execsSince = async (since: number): Promise<number> => {
  const until = Math.ceil(Date.now() / 1000) + 1;
  const s = await docker.getEvents({ since, until, filters: { type: ['container'], event: ['exec_create'] } });
  let lines = 0;
  for await (const c of s)
    lines += Buffer.from(c)
      .toString()
      .split('\n')
      .filter((x) => x.trim() !== '').length;
  return lines;
};

beforeAll(async () => {
  l = await unwrap(openDockerBackend());
  await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
  await unwrap(l.stores.image.create({ id: BARE, data: await bareTar() }));
});
afterAll(async () => {
  await l.close();
  expect(await pooled(l)).toEqual([]);
  await purge(docker, l.instanceId);
});

test('warm tasks run through the agent: no exec is made; the manifest and the pool say so', async () => {
  expect(l.supports.warmAgent).toBe(true);
  await unwrap(l.pool.configure([{ image: BASE, min: 2 }]));
  expect(await ready(l, BASE, 2)).toBe(true);
  expect(l.pool.stats().profiles[0]?.runsWith).toBe('agent');
  const since = Math.floor(Date.now() / 1000);
  const { hits } = l.pool.stats();
  const r = await unwrap(l.run({ image: BASE, spec: { cmd: ['sh', '-c', 'echo out; echo err >&2; exit 3'] } }));
  expect([r.exitCode, r.reason, text(r.stdout), text(r.stderr)]).toEqual([3, 'exited', 'out\n', 'err\n']);
  expect(l.pool.stats().hits).toBe(hits + 1);
  expect(await execsSince(since)).toBe(0);
});

test('an image with no shell at all runs warm (the pool needs no idle command)', async () => {
  await unwrap(l.pool.configure([{ image: BARE, min: 1 }]));
  expect(await ready(l, BARE)).toBe(true);
  const { hits } = l.pool.stats();
  const r = await unwrap(l.run({ image: BARE, spec: { cmd: ['echo', 'no shell here'] } }));
  expect([r.exitCode, text(r.stdout)]).toEqual([0, 'no shell here\n']);
  expect(l.pool.stats().hits).toBe(hits + 1);
});

/** Runs a task once a warm container is ready, and checks it took one. */
const warm = async (spec: Record<string, unknown>, image = BASE) => {
  expect(await ready(l, image)).toBe(true);
  const { hits } = l.pool.stats();
  const r = await unwrap(l.run({ image, spec }));
  expect(l.pool.stats().hits).toBe(hits + 1);
  return r;
};

test('env, cwd and user (a number, a name) from the spec; exit codes and 128 + signal; a missing command', async () => {
  await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
  const id = 'echo $GREETING; pwd; id -u; id -g';
  expect(text((await warm({ cmd: ['sh', '-c', id], env: { GREETING: 'hi' }, pwd: '/tmp' })).stdout)).toBe('hi\n/tmp\n0\n0\n');
  expect(text((await warm({ cmd: ['sh', '-c', id], user: '1234:567' })).stdout)).toBe('\n/\n1234\n567\n');
  expect(text((await warm({ cmd: ['sh', '-c', 'id -u; id -g; echo $HOME'], user: 'nobody' })).stdout)).toBe('65534\n65534\n/\n');
  // a working directory the image lacks is made, as for a cold container
  expect(text((await warm({ cmd: ['pwd'], pwd: '/made/for/it' })).stdout)).toBe('/made/for/it\n');
  const s = await warm({ cmd: ['sh', '-c', 'kill -TERM $$'] });
  expect([s.exitCode, s.reason]).toEqual([128 + 15, 'exited']);
  const m = await warm({ cmd: ['no-such-command'] });
  expect([m.exitCode, m.reason]).toEqual([127, 'not-found']);
});

test('20 MiB of output arrives whole through a warm task, stdout and stderr apart', async () => {
  await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
  const big = await warm({
    cmd: ['sh', '-c', 'head -c 20971520 /dev/zero | tr "\\0" x; echo end >&2'],
    limits: { outputBytes: 32 * 1024 * 1024 },
  });
  const out = Buffer.from(big.stdout);
  expect([out.length, out.every((b) => b === 0x78), text(big.stderr), big.truncated]).toEqual([
    20 * 1024 * 1024,
    true,
    'end\n',
    false,
  ]);
});

test('the deadline ends the whole process group; orphans are reaped, no zombie is left', async () => {
  await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
  expect(await ready(l, BASE)).toBe(true);
  const d = await unwrap(
    l.run({ image: BASE, spec: { cmd: ['sh', '-c', 'sleep 100 & sleep 100 & echo up; wait'], limits: { deadlineMs: 500 } } }),
  );
  expect([d.reason, d.state, text(d.stdout)]).toEqual(['deadline', 'killed', 'up\n']);
  expect(await ready(l, BASE)).toBe(true);
  const z = await unwrap(
    l.run({ image: BASE, spec: { cmd: ['sh', '-c', '(sleep 0.1 &); (sleep 0.1 &); sleep 0.5; cat /proc/[0-9]*/stat'] } }),
  );
  expect(text(z.stdout)).not.toMatch(/\) Z /);
});

test('a warm container killed or paused from outside during a task: the task ends lost, the container goes, the next task runs', async () => {
  await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
  for (const spoil of ['kill', 'pause'] as const) {
    expect(await ready(l, BASE)).toBe(true);
    const [c] = await pooled(l);
    const running = l.run({ image: BASE, spec: { cmd: ['sleep', '100'] } })();
    expect(await eventually(async () => (await docker.getContainer(String(c?.Id)).top()).Processes.length > 2)).toBe(true);
    await docker.getContainer(String(c?.Id))[spoil]();
    const r = await running;
    expect(E.isRight(r) && [r.right.reason, r.right.state]).toEqual(['lost', 'lost']);
    expect(await eventually(async () => !(await pooled(l)).some((x) => x.Id === c?.Id))).toBe(true);
    const next = await unwrap(l.run({ image: BASE, spec: { cmd: ['echo', `after ${spoil}`] } }));
    expect(text(next.stdout)).toBe(`after ${spoil}\n`);
  }
});

test('agent: false fills with the idle command and runs warm tasks with exec', async () => {
  const x = await unwrap(openDockerBackend({ agent: false }));
  try {
    expect(x.supports.warmAgent).toBe(false);
    const img = `image://local/${n('base')}`;
    await unwrap(x.stores.image.create({ id: img, data: await busyboxRootfsBytes() }));
    await unwrap(x.pool.configure([{ image: img, min: 1 }]));
    expect(x.pool.stats().profiles[0]?.runsWith).toBe('exec');
    const since = Math.floor(Date.now() / 1000);
    const r = await unwrap(x.run({ image: img, spec: { cmd: ['echo', 'by exec'] } }));
    expect([text(r.stdout), x.pool.stats().hits]).toEqual(['by exec\n', 1]);
    expect(await execsSince(since)).toBeGreaterThan(0);
  } finally {
    await x.close();
    await purge(docker, x.instanceId);
  }
});

test('a profile whose agent container cannot start (read-only root filesystem) fills with the idle command and uses exec', async () => {
  const options = { readOnlyRootfs: true };
  await unwrap(l.pool.configure([{ image: BASE, min: 1, options }]));
  expect(l.pool.stats().profiles[0]).toMatchObject({ runsWith: 'exec', ready: 1 });
  const r = await unwrap(l.run({ image: BASE, options, spec: { cmd: ['echo', 'read-only'] } }));
  expect([text(r.stdout), l.pool.stats().hits]).toEqual(['read-only\n', 1]);
});

test('after the embedder closes mid-task, the reopened backend finds the agent task lost and removes its container', async () => {
  const location = mkdtempSync(join(tmpdir(), 'lessl-agent-'));
  try {
    const a = await unwrap(openDockerBackend({ registry: await Registry.open({ location }) }));
    await unwrap(a.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
    await unwrap(a.pool.configure([{ image: BASE, min: 1 }]));
    const [c] = await pooled(a);
    void a.run({ image: BASE, keep: true, spec: { cmd: ['sleep', '100'] } })();
    expect(await eventually(async () => (await docker.getContainer(String(c?.Id)).top()).Processes.length > 2)).toBe(true);
    await a.close();
    const b = await unwrap(openDockerBackend({ registry: { location } }));
    try {
      const [task] = await unwrap(b.stores.task.list());
      const end = await unwrap(b.tasks.wait(String(task?.id.key)));
      expect([end.reason, end.state]).toEqual(['lost', 'lost']);
      expect(await eventually(async () => (await pooled(b)).length === 0)).toBe(true);
    } finally {
      await b.close();
      await purge(docker, a.instanceId);
    }
  } finally {
    rmSync(location, { recursive: true, force: true });
  }
});
