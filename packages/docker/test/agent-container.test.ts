// AgentContainer on the real engine: a container whose main process is lessl-agent, driven over
// its attach stream (no exec), with runs multiplexed on it; faults from outside (kill, pause).
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, expect, test } from 'vitest';
import {
  BUSYBOX,
  busyboxRootfs,
  startAgentContainer,
  type AgentContainer,
  type AgentRunEnd,
  type AgentRunRequest,
} from '@lessl/docker';
import { client, hostNamed, testHosts } from './hosts-support.js';
import { n } from './support.js';

const docker = new Docker();
const BASE = `lessl-agent-test:${n('base')}`;
const BARE = `lessl-agent-test:${n('bare')}`;
const LABELS = { 'lessl.test': 'agent-container' };
const HARDENED: Docker.HostConfig = {
  NetworkMode: 'none',
  CapDrop: ['ALL'],
  SecurityOpt: ['no-new-privileges'],
  Init: true,
  PidsLimit: 256,
  Memory: 256 * 1024 ** 2,
  MemorySwap: 256 * 1024 ** 2,
};

const importImage = async (tar: NodeJS.ReadableStream, ref: string, on = docker): Promise<void> => {
  const [repo, tag] = ref.split(':');
  const s = await on.importImage(tar, { repo, tag });
  await new Promise((res, rej) => on.modem.followProgress(s, (e) => (e ? rej(e) : res(undefined))));
};

/** An image holding nothing but busybox as /bin/echo and /bin/cat (no shell, no /etc). */
const bareImage = (): NodeJS.ReadableStream => {
  const p = pack();
  p.entry({ name: 'bin/', type: 'directory', mode: 0o755 });
  p.entry({ name: 'bin/echo', mode: 0o755 }, readFileSync(BUSYBOX));
  p.entry({ name: 'bin/cat', type: 'link', linkname: 'bin/echo', mode: 0o755 });
  p.finalize();
  return p;
};

const agents: AgentContainer[] = [];
const start = async (image = BASE, hostConfig = HARDENED): Promise<AgentContainer> => {
  const a = await startAgentContainer(docker, { image, hostConfig, labels: LABELS, env: ['PATH=/bin', 'FROM_IMAGE=yes'] });
  if (E.isLeft(a)) throw new Error(a.left.message);
  agents.push(a.right);
  return a.right;
};

/** Runs one command to its end; answers its end and its output by stream. */
const run = async (
  a: AgentContainer,
  req: Omit<AgentRunRequest, 'output'>,
): Promise<AgentRunEnd & { out: string; err: string; order: string[] }> => {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const order: string[] = [];
  const r = a.run({
    ...req,
    output: (s, d) => {
      (s === 'stdout' ? out : err).push(Buffer.from(d));
      order.push(s);
    },
  });
  if (E.isLeft(r)) throw new Error(r.left.message);
  const end = await r.right.done;
  return { ...end, out: Buffer.concat(out).toString(), err: Buffer.concat(err).toString(), order };
};

let a: AgentContainer;
beforeAll(async () => {
  await importImage(busyboxRootfs(), BASE);
  await importImage(bareImage(), BARE);
  a = await start();
});
afterAll(async () => {
  for (const x of agents) await x.remove();
  for (const i of [BASE, BARE]) await docker.getImage(i).remove({ force: true });
});

test('runs a command with no exec: output, exit code, and the container has no ExecIDs', async () => {
  const r = await run(a, { argv: ['echo', 'hi'] });
  expect(r).toMatchObject({ exitCode: 0, reason: 'exited', out: 'hi\n', err: '' });
  expect((await docker.getContainer(a.id).inspect()).ExecIDs ?? []).toEqual([]);
});

test('env over the image’s, cwd, users by number and by name', async () => {
  const r = await run(a, { argv: ['sh', '-c', 'echo $FROM_IMAGE $MINE; pwd; id -u; id -g'], env: ['MINE=1'], cwd: '/tmp' });
  expect(r.out).toBe('yes 1\n/tmp\n0\n0\n');
  expect((await run(a, { argv: ['sh', '-c', 'id -u; id -g'], user: '1234:567' })).out).toBe('1234\n567\n');
  expect((await run(a, { argv: ['sh', '-c', 'id -u; id -g; echo $HOME'], user: 'nobody' })).out).toBe('65534\n65534\n/\n');
  const unknown = await run(a, { argv: ['true'], user: 'nosuchuser' });
  expect([unknown.exitCode, unknown.err]).toEqual([126, expect.stringContaining('unable to find user nosuchuser')]);
});

test('a run has the container’s capabilities only: root cannot switch users or kill another user’s process', async () => {
  const r = await run(a, { argv: ['sh', '-c', 'grep CapBnd /proc/self/status; su nobody -s /bin/true -c true; echo $?'] });
  expect(r.out).toMatch(/CapBnd:\s+0000000000000000\n/);
  expect(r.out.trim().split('\n').at(-1)).not.toBe('0');
});

test('stdout and stderr apart and in order; exit codes and 128 + signal; a missing command is not-found', async () => {
  const r = await run(a, { argv: ['sh', '-c', 'echo 1; echo 2 >&2; sleep 0.1; echo 3; exit 7'] });
  expect(r).toMatchObject({ exitCode: 7, reason: 'exited', out: '1\n3\n', err: '2\n' });
  expect((await run(a, { argv: ['sh', '-c', 'kill -USR1 $$'] })).exitCode).toBe(128 + 10);
  expect(await run(a, { argv: ['no-such-thing'] })).toMatchObject({ exitCode: 127, reason: 'not-found' });
});

test('a kill reaches the whole process group, and orphans are reaped (no zombies)', async () => {
  const r = a.run({ argv: ['sh', '-c', 'sleep 100 & sleep 100 & echo up; wait'], output: () => undefined });
  if (E.isLeft(r)) throw new Error(r.left.message);
  await new Promise((res) => setTimeout(res, 200));
  expect(await r.right.stop('TERM', 5000)).toMatchObject({ exitCode: 128 + 15, reason: 'killed' });
  await run(a, { argv: ['sh', '-c', '(sleep 0.1 &) ; (sleep 0.1 &)'] });
  await new Promise((res) => setTimeout(res, 500));
  const ps = await run(a, { argv: ['sh', '-c', 'cat /proc/[0-9]*/stat 2>/dev/null'] });
  expect(ps.out).not.toMatch(/\) Z /);
  expect(ps.out).not.toMatch(/\(sleep\)/);
});

test('stdin is relayed; 50 MiB to a command that never reads it ends; 20 MiB of output arrives whole', async () => {
  const chunks = async function* (): AsyncIterable<Uint8Array> {
    yield Buffer.from('hello ');
    yield Buffer.from('agent');
  };
  expect((await run(a, { argv: ['cat'], stdin: chunks() })).out).toBe('hello agent');
  let given = 0;
  const lots = async function* (): AsyncIterable<Uint8Array> {
    for (let i = 0; i < 50; i++, given++) yield Buffer.alloc(1024 * 1024, 0x61);
  };
  expect(await run(a, { argv: ['true'], stdin: lots() })).toMatchObject({ exitCode: 0 });
  expect(given).toBeLessThan(50);
  const big = await run(a, { argv: ['sh', '-c', 'head -c 20971520 /dev/zero | tr "\\0" x; echo end >&2'] });
  expect([big.out.length, /^x+$/.test(big.out), big.err]).toEqual([20 * 1024 * 1024, true, 'end\n']);
});

test('runs interleave on one container', async () => {
  const slow = run(a, { argv: ['sh', '-c', 'sleep 1; echo slow'] });
  const fast = await Promise.all(Array.from({ length: 20 }, (_, i) => run(a, { argv: ['echo', String(i)] })));
  expect(fast.map((r) => r.out)).toEqual(Array.from({ length: 20 }, (_, i) => `${i}\n`));
  expect((await slow).out).toBe('slow\n');
});

test('an image with no shell and no /etc runs commands (cat reads stdin)', async () => {
  const bare = await start(BARE);
  expect(await run(bare, { argv: ['echo', 'bare'] })).toMatchObject({ exitCode: 0, out: 'bare\n', err: '' });
  const input = async function* (): AsyncIterable<Uint8Array> {
    yield Buffer.from('in');
  };
  expect((await run(bare, { argv: ['cat'], stdin: input() })).out).toBe('in');
});

test('the container killed from outside: the run in flight ends lost, the container is broken', async () => {
  const k = await start();
  const r = k.run({ argv: ['sleep', '100'], output: () => undefined });
  if (E.isLeft(r)) throw new Error(r.left.message);
  execFileSync('docker', ['kill', k.id]);
  expect(await r.right.done).toEqual({ exitCode: null, reason: 'lost' });
  expect(k.broken).toBe(true);
  expect(await run(k, { argv: ['echo'] })).toMatchObject({ reason: 'lost' });
});

test('the container paused from outside: the run ends lost (killed once a kill was asked), the container is broken', async () => {
  const p = await startAgentContainer(docker, { image: BASE, hostConfig: HARDENED, labels: LABELS, livenessMs: 300 });
  if (E.isLeft(p)) throw new Error(p.left.message);
  agents.push(p.right);
  const r = p.right.run({ argv: ['sleep', '100'], output: () => undefined });
  const s = p.right.run({ argv: ['sleep', '100'], output: () => undefined });
  if (E.isLeft(r) || E.isLeft(s)) throw new Error('run refused');
  execFileSync('docker', ['pause', p.right.id]);
  s.right.kill('KILL');
  expect(await r.right.done).toEqual({ exitCode: null, reason: 'lost' });
  expect(await s.right.done).toEqual({ exitCode: null, reason: 'killed' });
  expect(p.right.broken).toBe(true);
  await p.right.remove();
  await expect(docker.getContainer(p.right.id).inspect()).rejects.toMatchObject({ statusCode: 404 });
});

test('a field no process can take is InvalidEntry naming it; nothing runs', () => {
  const r = a.run({ argv: ['echo', 'a\0b'], output: () => undefined });
  expect(E.isLeft(r) && r.left).toMatchObject({ _tag: 'InvalidEntry', keys: ['cmd'] });
  expect(E.isLeft(a.run({ argv: [], output: () => undefined }))).toBe(true);
});

const hosts = testHosts();
const h1 = hosts === undefined ? undefined : hostNamed(hosts, 'h1');
test.runIf(h1 !== undefined)(
  'a remote engine over mutual TLS: the agent is copied in and runs over the attach stream',
  async () => {
    if (h1 === undefined) return;
    const remote = client(h1, 'tls');
    await importImage(busyboxRootfs(), BASE, remote);
    const r = await startAgentContainer(remote, { image: BASE, hostConfig: HARDENED, labels: LABELS, env: ['PATH=/bin'] });
    try {
      if (E.isLeft(r)) throw new Error(r.left.message);
      const input = async function* (): AsyncIterable<Uint8Array> {
        yield Buffer.from('over tls');
      };
      expect(await run(r.right, { argv: ['cat'], stdin: input() })).toMatchObject({ exitCode: 0, out: 'over tls' });
      expect((await remote.getContainer(r.right.id).inspect()).ExecIDs ?? []).toEqual([]);
    } finally {
      if (E.isRight(r)) await r.right.remove();
      await remote.getImage(BASE).remove({ force: true });
    }
  },
);
