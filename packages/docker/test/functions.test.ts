// Functions on the real engine: invocations through lessl-agent (no exec), reuse policies and
// isolation between functions and owners, deadlines and caps, faults from outside (the
// container killed or paused), removal under way, scale to zero, and nothing left behind.
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap, type Backend, type Invocation } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { eventually, n } from './support.js';

const docker = new Docker();
const IMAGE = `image://local/${n('fn-base')}`;
const alice = { principal: 'alice' };
const bob = { principal: 'bob' };
let b: Backend;

/** The containers of this backend's functions, by the function label. */
const fnContainers = async (name?: string): Promise<Docker.ContainerInfo[]> =>
  docker
    .listContainers({
      all: true,
      filters: { label: [`lessl.registry=${b.instanceId}`, ...(name === undefined ? ['lessl.function'] : [])] },
    })
    .then((cs) =>
      cs.filter(
        (c) =>
          c.Labels['lessl.function'] !== undefined &&
          (name === undefined || c.Labels['lessl.function']?.startsWith(`${name}@`) === true),
      ),
    );

/** Deploys a function of `who` running `cmd`; `spec` fields go into its spec, the rest into its definition. */
const deploy = async (
  name: string,
  cmd: string[],
  opts: { spec?: object } & Record<string, unknown> = {},
  who = alice,
): Promise<void> => {
  const { spec, ...rest } = opts;
  await unwrap(b.functions.deploy({ name, image: IMAGE, spec: { cmd, ...spec }, ...rest }, who));
};

const invoke = (name: string, stdin?: string, who = alice): Promise<Invocation> =>
  unwrap(b.functions.invoke(name, { ...who, ...(stdin === undefined ? {} : { stdin }) }));

beforeAll(async () => {
  b = await unwrap(openDockerBackend());
  await unwrap(b.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));
}, 120_000);

afterAll(async () => {
  const instance = b.instanceId;
  await b.close();
  await purge(docker, instance);
});

describe('functions on Docker', () => {
  test('per-function: cold, then warm in the same container through the agent (no exec); stdin, env, cwd', async () => {
    await deploy('echo-in', ['sh', '-c', 'cat; echo " $GREETING from $(pwd)"; hostname > /tmp/host'], {
      reuse: 'per-function',
      maxContainers: 1,
      spec: { env: { GREETING: 'hi' }, pwd: '/tmp' },
    });
    const r1 = await invoke('echo-in', 'input');
    expect(r1).toMatchObject({ exitCode: 0, reason: 'exited', cold: true });
    expect(text(r1.stdout)).toBe('input hi from /tmp\n');
    const r2 = await invoke('echo-in', 'again');
    expect(r2).toMatchObject({ exitCode: 0, cold: false });
    const [c] = await fnContainers('echo-in');
    expect(c).toBeDefined();
    const info = await docker.getContainer(c?.Id ?? '').inspect();
    expect(info.ExecIDs ?? []).toEqual([]);
    expect(b.functions.stats().find((s) => s.name === 'echo-in')?.containers).toMatchObject({ idle: 1, busy: 0 });
  }, 60_000);

  test('reuse: per-function keeps /tmp between its invocations; per-invocation never; never across functions or owners', async () => {
    const write = ['sh', '-c', 'cat /tmp/mark 2>/dev/null || echo none; echo "$1" > /tmp/mark', 'sh'];
    await deploy('keeps', [...write.slice(0, 3), 'sh', 'keeps'], { reuse: 'per-function', maxContainers: 1 });
    await deploy('fresh', [...write.slice(0, 3), 'sh', 'fresh'], { reuse: 'per-invocation', minContainers: 1 });
    await deploy('other-owner', [...write.slice(0, 3), 'sh', 'bob'], { reuse: 'per-function', maxContainers: 1 }, bob);
    await invoke('keeps');
    expect(text((await invoke('keeps')).stdout)).toBe('keeps\n');
    await invoke('fresh');
    expect(text((await invoke('fresh')).stdout)).toBe('none\n');
    expect(text((await invoke('other-owner', undefined, bob)).stdout)).toBe('none\n');
    const ids = new Set([...(await fnContainers('keeps')), ...(await fnContainers('other-owner'))].map((c) => c.Id));
    expect(ids.size).toBe(2);
    expect(await b.functions.invoke('other-owner', alice)()).toMatchObject(E.left({ _tag: 'NotFound' }));
  }, 90_000);

  test('concurrency: one container runs up to `concurrency` invocations at once; more wait, none fails', async () => {
    await deploy('conc', ['sh', '-c', 'sleep 0.3; echo ok'], { reuse: 'per-function', concurrency: 4, maxContainers: 1 });
    const all = await Promise.all(Array.from({ length: 8 }, () => invoke('conc')));
    expect(all.every((r) => r.exitCode === 0 && text(r.stdout) === 'ok\n')).toBe(true);
    expect((await fnContainers('conc')).length).toBe(1);
  }, 60_000);

  test('a deadline kills the process group; the container is discarded; the next invocation succeeds', async () => {
    await deploy('slow', ['sh', '-c', 'read x; sleep 100 & sleep 100'], {
      reuse: 'per-function',
      spec: { limits: { deadlineMs: 500 } },
    });
    const r = await invoke('slow', 'go\n');
    expect(r).toMatchObject({ reason: 'deadline', exitCode: null });
    expect(await eventually(async () => (await fnContainers('slow')).length === 0)).toBe(true);
    await deploy('slow', ['sh', '-c', 'echo quick'], { reuse: 'per-function', spec: { limits: { deadlineMs: 5000 } } });
    expect(text((await invoke('slow')).stdout)).toBe('quick\n');
  }, 60_000);

  test('caps: 100 MiB of output is cut at the cap; input a command never reads and a fork bomb end within limits', async () => {
    // per-function, yet each container goes: past a cap or with input left unread it is never reused
    await deploy('loud', ['sh', '-c', 'head -c 104857600 /dev/zero'], {
      reuse: 'per-function',
      spec: { limits: { outputBytes: 1 << 20 } },
    });
    const loud = await invoke('loud');
    expect(loud).toMatchObject({ exitCode: 0, truncated: true });
    expect(loud.stdout.byteLength).toBe(1 << 20);
    expect(await eventually(async () => (await fnContainers('loud')).length === 0)).toBe(true);
    await deploy('deaf', ['true'], { reuse: 'per-function' });
    const big = new Uint8Array(50 << 20);
    expect(await unwrap(b.functions.invoke('deaf', { ...alice, stdin: big }))).toMatchObject({ exitCode: 0 });
    expect(await eventually(async () => (await fnContainers('deaf')).length === 0)).toBe(true);
    expect(await invoke('deaf', 'x')).toMatchObject({ exitCode: 0, cold: true });
    await deploy('bomb', ['sh', '-c', 'b() { b | b & }; b; sleep 5'], {
      reuse: 'per-function',
      spec: { limits: { pids: 64, deadlineMs: 3000 } },
    });
    const bomb = await invoke('bomb');
    expect(['deadline', 'exited']).toContain(bomb.reason);
    expect(await eventually(async () => (await fnContainers('bomb')).length === 0, 20_000)).toBe(true);
    expect(text((await invoke('echo-in', 'after')).stdout)).toContain('after');
  }, 120_000);

  test('the container killed or paused from outside: the invocation ends Unavailable, the container goes, the next succeeds', async () => {
    await deploy('victim', ['sh', '-c', 'sleep 30'], { reuse: 'per-function', maxContainers: 1 });
    for (const fault of ['kill', 'pause'] as const) {
      const pending = b.functions.invoke('victim', alice)();
      expect(await eventually(async () => (await fnContainers('victim')).some((c) => c.State === 'running'))).toBe(true);
      await new Promise((r) => setTimeout(r, 300));
      const [c] = (await fnContainers('victim')).filter((x) => x.State === 'running');
      execFileSync('docker', [fault, c?.Id ?? '']);
      expect(await pending).toMatchObject(E.left({ _tag: 'Unavailable' }));
      expect(await eventually(async () => !(await fnContainers('victim')).some((x) => x.Id === c?.Id))).toBe(true);
    }
    await deploy('victim', ['echo', 'alive'], { reuse: 'per-function', maxContainers: 1 });
    expect(text((await invoke('victim')).stdout)).toBe('alive\n');
  }, 120_000);

  test('removing a function kills its invocations under way and removes its containers', async () => {
    await deploy('doomed', ['sleep', '60'], { reuse: 'per-function' });
    const pending = b.functions.invoke('doomed', alice)();
    await new Promise((r) => setTimeout(r, 1500));
    await unwrap(b.functions.remove('doomed', alice));
    expect(await pending).toMatchObject(E.right({ reason: 'killed' }));
    // removal answers once the invocation has ended and its containers are gone
    expect(await fnContainers('doomed')).toEqual([]);
  }, 60_000);

  test('scale to zero: containers of a function unused for idleMs go; the next invocation starts cold', async () => {
    await deploy('sleepy', ['echo', 'z'], { reuse: 'per-function', minContainers: 1, idleMs: 1000 });
    await invoke('sleepy');
    expect((await fnContainers('sleepy')).length).toBe(1);
    expect(await eventually(async () => (await fnContainers('sleepy')).length === 0, 10_000)).toBe(true);
    expect(await invoke('sleepy')).toMatchObject({ cold: true, exitCode: 0 });
  }, 60_000);

  test('a crash leaves function containers to the next open, which removes them; definitions stay', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-fn-crash-'));
    const fixture = join(import.meta.dirname, 'fixtures', 'functions-crash.mjs');
    const stdout = await new Promise<string>((resolve) =>
      execFile(process.execPath, [fixture, location], { timeout: 60_000 }, (_err, out) => resolve(String(out))),
    );
    const [instance, said] = stdout.split(' ');
    expect(said).toBe('up\n');
    const left = async (): Promise<number> =>
      (await docker.listContainers({ all: true, filters: { label: [`lessl.registry=${instance ?? ''}`, 'lessl.function'] } }))
        .length;
    expect(await left()).toBe(1);
    const again = await unwrap(openDockerBackend({ registry: { location } }));
    try {
      expect(await eventually(async () => (await left()) === 0)).toBe(true);
      expect(await unwrap(again.functions.get('survivor'))).toMatchObject({ version: 1, reuse: 'per-function' });
      expect(text((await unwrap(again.functions.invoke('survivor'))).stdout)).toBe('up\n');
    } finally {
      await again.close();
      await purge(docker, instance ?? '');
    }
  }, 120_000);
});
