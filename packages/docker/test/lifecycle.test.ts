/**
 * The execution model on a real engine, beyond the conformance suite: exec'd tasks that are
 * really killed, nothing left after abort/kill/deadline, a crashed embedding process, a hung
 * engine, and a process that exits although it never closed its backend.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap, type LesslEvent } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { engineProxy, n, startDaemon } from './support.js';

const docker = new Docker();
const BASE = 'image://local/base';
const fixture = (f: string): string => join(import.meta.dirname, 'fixtures', f);
let l: DockerBackend;

/** Containers of this registry (optionally of one executor). */
const containers = async (b: DockerBackend, executor?: string): Promise<number> =>
  (
    await docker.listContainers({
      all: true,
      filters: {
        label: [`lessl.registry=${b.instanceId}`, ...(executor === undefined ? [] : [`lessl.id=${executor}`])],
      },
    })
  ).length;

/** Binds a one-shot task into a running executor (an exec); answers the task ID. */
const execIn = async (b: DockerBackend, x: string, spec: Record<string, unknown>): Promise<string> => {
  const task = `task://local/${n('e')}`;
  await unwrap(b.stores.task.create({ id: task, spec }));
  const h = await unwrap(b.composer.handle(x));
  const r = await unwrap(b.composer.commit(await unwrap(b.composer.bind(await unwrap(b.composer.join(h, task)), task))));
  if (!r.committed) throw new Error(`exec did not start: ${r.error.message}`);
  return task;
};

/** Processes running in a container (their command lines). */
const ps = async (containerId: string): Promise<string> => {
  const ex = await docker.getContainer(containerId).exec({ Cmd: ['ps', '-o', 'args'], AttachStdout: true, AttachStderr: true });
  const s = (await ex.start({ hijack: true, stdin: false })) as unknown as NodeJS.ReadableStream;
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts).toString();
};

beforeAll(async () => {
  l = await unwrap(openDockerBackend());
  await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
});
afterAll(async () => {
  await l.close();
  await purge(docker, l.instanceId);
});

describe("exec'd tasks", () => {
  test('kill ends the exec’d process inside the container (and its children)', async () => {
    const { x, containerId } = await startDaemon(l, BASE);
    const task = await execIn(l, x, { cmd: ['sh', '-c', 'sleep 1234 & sleep 4321'] });
    await new Promise((r) => setTimeout(r, 300));
    expect(await ps(containerId)).toMatch(/sleep 4321/);
    const st = await unwrap(l.tasks.kill(task, { graceMs: 500 }));
    expect([st.state, st.reason]).toEqual(['killed', 'killed']);
    const left = await ps(containerId);
    expect(left).not.toMatch(/sleep 4321/);
    expect(left).not.toMatch(/sleep 1234/);
    expect(left).toMatch(/sleep 3600/); // the daemon is untouched
  });
  test('an exec past its deadline is killed, not just abandoned', async () => {
    const { x, containerId } = await startDaemon(l, BASE);
    const task = await execIn(l, x, { cmd: ['sleep', '5555'], limits: { deadlineMs: 400 } });
    const r = await unwrap(l.tasks.wait(task));
    expect([r.reason, r.state]).toEqual(['deadline', 'killed']);
    expect(await ps(containerId)).not.toMatch(/sleep 5555/);
  });
});

/** A task that keeps forking: a background loop of shells, a background writer and a foreground writer. */
const FORKER = [
  'sh',
  '-c',
  '(while :; do sh -c "echo child; sleep 0.05"; done) & (while :; do echo bg; sleep 0.05; done) & while :; do echo fg; sleep 0.05; done',
];

/** Processes of any exec'd task left in a container (their environment carries an exec marker). */
const marked = async (containerId: string): Promise<number> => {
  const ex = await docker.getContainer(containerId).exec({
    Cmd: ['sh', '-c', 'grep -ls LESSL_EXEC= /proc/[0-9]*/environ | wc -l'],
    AttachStdout: true,
  });
  const s = (await ex.start({ hijack: true, stdin: false })) as unknown as NodeJS.ReadableStream;
  const parts: Buffer[] = [];
  for await (const c of s as AsyncIterable<Buffer>) parts.push(c);
  return Number(/(\d+)\s*$/.exec(Buffer.concat(parts).toString('latin1'))?.[1] ?? -1);
};

/** A task's output so far. */
const output = async (b: DockerBackend, task: string): Promise<string> => {
  let out = '';
  for await (const c of b.tasks.logs(task)) out += text(c.data);
  return out;
};

describe("exec'd tasks that fork", () => {
  test('a kill with a grace period also ends what outlives the task’s own process (a child that ignores TERM)', async () => {
    const { x, containerId } = await startDaemon(l, BASE);
    const stubborn = ['sh', '-c', '(trap "" TERM; while :; do echo bg; sleep 0.05; done) & wait'];
    const task = await execIn(l, x, { cmd: stubborn });
    for await (const c of l.tasks.logs(task, { follow: true })) if (text(c.data).includes('bg')) break;
    await unwrap(l.tasks.kill(task, { graceMs: 2000 }));
    const seen = await output(l, task);
    expect(await marked(containerId)).toBe(0);
    expect(await output(l, task)).toBe(seen);
  });

  test('a deadline or a kill ends every process the task started: nothing of it runs after, no output after its end', async () => {
    const { x, containerId } = await startDaemon(l, BASE);
    for (const end of ['deadline', 'kill'] as const) {
      const task = await execIn(l, x, { cmd: FORKER, ...(end === 'deadline' ? { limits: { deadlineMs: 500 } } : {}) });
      if (end === 'kill') {
        await new Promise((r) => setTimeout(r, 500));
        await unwrap(l.tasks.kill(task, { graceMs: 300 }));
      }
      const r = await unwrap(l.tasks.wait(task));
      expect(r.reason).toBe(end === 'deadline' ? 'deadline' : 'killed');
      const seen = await output(l, task);
      expect(seen).toMatch(/fg/);
      expect(await marked(containerId), end).toBe(0);
      expect(await output(l, task)).toBe(seen);
    }
  });
});

describe('nothing is left behind', () => {
  test('after a deadline, a kill and an abort, no container of the executor remains', async () => {
    const deadline = `task://local/${n('t')}`;
    await unwrap(l.stores.task.create({ id: deadline, spec: { cmd: ['sleep', '60'], limits: { deadlineMs: 300 } } }));
    const x1 = `executor://local/${n('x')}`;
    let h = await unwrap(l.composer.handle(x1));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), deadline)), deadline));
    await unwrap(l.composer.commit(h));
    await unwrap(l.tasks.wait(deadline));
    expect(await containers(l, x1)).toBe(0);

    const killed = `task://local/${n('t')}`;
    await unwrap(l.stores.task.create({ id: killed, spec: { cmd: ['sleep', '60'] } }));
    const x2 = `executor://local/${n('x')}`;
    h = await unwrap(l.composer.handle(x2));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), killed)), killed));
    await unwrap(l.composer.commit(h));
    await unwrap(l.tasks.kill(killed, { signal: 'KILL' }));
    expect(await containers(l, x2)).toBe(0);

    const before = await containers(l);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 300);
    const r = await l.run({ image: BASE, spec: { cmd: ['sleep', '60'] }, signal: ac.signal })();
    expect(E.isLeft(r) && r.left._tag).toBe('Aborted');
    expect(await containers(l)).toBe(before);
  });
});

describe('a crash of the embedding process', () => {
  test('after kill -9, reopening finds every task: followed to its end, ended while down, or lost; one unbound each', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-crash-'));
    const specs = {
      slow: { cmd: ['sh', '-c', 'echo before; sleep 2; echo after'] },
      quick: { cmd: ['sh', '-c', 'sleep 0.3; echo quick; exit 7'] },
      gone: { cmd: ['sleep', '3600'], daemon: true },
    };
    const child = spawn(process.execPath, [fixture('embed.mjs'), location, JSON.stringify(specs)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const line = await new Promise<string>((res, rej) => {
      let buf = '';
      child.stdout.on('data', (d: Buffer) => {
        buf += d.toString();
        if (buf.includes('\n')) res(buf.split('\n')[0] as string);
      });
      child.on('exit', (code) => rej(new Error(`embedding process exited early (${code})`)));
    });
    const ids = JSON.parse(line) as Record<string, { task: string; executor: string; containerId: string }> & {
      instance: string;
    };
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // while no process embeds lessl: the quick task ends, the daemon's container is removed by someone else
    await new Promise((r) => setTimeout(r, 800));
    await docker.getContainer(String(ids.gone?.containerId)).remove({ force: true });
    const b = await unwrap(openDockerBackend({ registry: { location } }));
    try {
      const slow = await unwrap(b.tasks.wait(String(ids.slow?.task)));
      expect([slow.exitCode, text(slow.stdout), slow.state]).toEqual([0, 'before\nafter\n', 'exited']);
      const quick = await unwrap(b.tasks.wait(String(ids.quick?.task)));
      expect([quick.exitCode, text(quick.stdout)]).toEqual([7, 'quick\n']);
      const gone = await unwrap(b.tasks.wait(String(ids.gone?.task)));
      expect([gone.state, gone.reason]).toEqual(['lost', 'lost']);
      const unbound = new Map<string, number>();
      const last = b.events.lastSeq();
      for await (const e of b.events.stream({ types: ['unbound'] }, { since: 0 }) as AsyncIterable<LesslEvent>) {
        unbound.set(e.id.key, (unbound.get(e.id.key) ?? 0) + 1);
        if (e.seq >= last) break;
      }
      for (const k of ['slow', 'quick', 'gone']) expect(unbound.get(String(ids[k]?.task))).toBe(1);
      expect(await containers(b, String(ids.slow?.executor))).toBe(0);
      expect(await containers(b, String(ids.quick?.executor))).toBe(0);
    } finally {
      await b.close();
      await purge(docker, ids.instance);
      rmSync(location, { recursive: true, force: true });
    }
  });
});

describe('a process that embeds lessl behaves', () => {
  test('it exits by itself without close(): the event watcher does not keep it alive', async () => {
    const t0 = Date.now();
    const { stdout } = await promisify(execFile)(process.execPath, [fixture('exit.mjs')], { timeout: 30_000 });
    expect(stdout).toBe('ran\n');
    expect(Date.now() - t0).toBeLessThan(30_000);
  });
  test('Symbol.asyncDispose closes the backend', async () => {
    const b = await unwrap(openDockerBackend({ watch: true }));
    await b[Symbol.asyncDispose]();
    const r = await b.stores.volume.create({ id: `volume://local/${n('v')}` })();
    expect(E.isLeft(r)).toBe(true);
  });
  test('a hung engine answers Unavailable naming it within the bound, and the backend recovers when it answers again', async () => {
    // a proxy in front of the engine that can be frozen: connections are accepted and nothing is answered,
    // which is what a client sees of a dockerd stopped with SIGSTOP
    const proxy = await engineProxy();
    const path = proxy.path;
    const b = await unwrap(openDockerBackend({ socketPath: path, watch: false, callTimeoutMs: 1500 }));
    try {
      proxy.mode = 'frozen';
      const t0 = Date.now();
      const r = await b.stores.volume.create({ id: `volume://local/${n('v')}` })();
      const took = Date.now() - t0;
      expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
      expect(E.isLeft(r) && r.left.message).toContain(`unix://${path}`);
      console.log(`hung engine: Unavailable after ${took} ms (bound 1500 ms)`);
      expect(took).toBeLessThan(10_000);
      proxy.mode = 'pass';
      const v = `volume://local/${n('v')}`;
      await unwrap(b.stores.volume.create({ id: v }));
      await unwrap(b.stores.volume.delete(v));
    } finally {
      await b.close();
      await purge(docker, b.instanceId);
      await proxy.close();
    }
  });
});
