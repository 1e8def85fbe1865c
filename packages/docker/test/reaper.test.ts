/**
 * The reaper on the real engine: an embedding process (a child) that is SIGKILLed leaves
 * nothing behind; one that closes cleanly keeps everything; a reaper killed from outside leaves
 * its embedder working; `reaper: false` starts none; the reaper has no network; its image is
 * the Node image the service's base is made of (scripts/node-base.sh), by the same builder.
 */
import { execFile, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { afterAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { openDockerBackend, purge, REAPER_GRACE_MS, REAPER_IMAGE } from '@lessl/docker';
import { engineProxy, eventually } from './support.js';

const docker = new Docker();
const dirs: string[] = [];
const children: ChildProcessWithoutNullStreams[] = [];
afterAll(() => {
  for (const c of children) c.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/**
 * The embedder: opens a backend with the options of argv[1], makes an image, a volume and a
 * daemon task, prints `{ instance }`, then obeys lines on stdin: `run` (a one-shot task, prints
 * its output) and `close` (closes the backend, prints `closed`, exits).
 */
const EMBEDDER = `
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend } from '@lessl/docker';
const b = await unwrap(openDockerBackend({ watch: false, ...JSON.parse(process.argv[1]) }));
await unwrap(b.stores.image.create({ id: 'image://local/base', data: await busyboxRootfsBytes() }));
await unwrap(b.stores.volume.create({ id: 'volume://local/data' }));
await unwrap(b.stores.task.create({ id: 'task://local/d', spec: { cmd: ['sleep', '3600'], daemon: true } }));
let h = await unwrap(b.composer.handle('executor://local/x'));
h = await unwrap(b.composer.join(h, 'image://local/base'));
h = await unwrap(b.composer.join(h, 'volume://local/data', { mountpoint: '/data' }));
h = await unwrap(b.composer.join(h, 'task://local/d'));
h = await unwrap(b.composer.bind(h, 'task://local/d'));
const r = await unwrap(b.composer.commit(h));
if (!r.committed) throw new Error(r.error.message);
console.log(JSON.stringify({ instance: b.instanceId }));
for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'run') {
    const out = await unwrap(b.run({ image: 'image://local/base', spec: { cmd: ['echo', 'still here'] } }));
    console.log(JSON.stringify({ stdout: new TextDecoder().decode(out.stdout) }));
  }
  if (line === 'close') {
    await b.close();
    console.log(JSON.stringify({ closed: true }));
    process.exit(0);
  }
}
`;

/** A running embedder and the lines it prints. */
interface Embedder {
  readonly child: ChildProcessWithoutNullStreams;
  readonly instance: string;
  next(): Promise<Record<string, unknown>>;
}

const embed = async (options: Record<string, unknown> = {}): Promise<Embedder> => {
  const child = spawn(process.execPath, ['--input-type=module', '-e', EMBEDDER, JSON.stringify(options)], {
    cwd: join(import.meta.dirname, '..'),
  });
  children.push(child);
  const errors: string[] = [];
  child.stderr.on('data', (d: Buffer) => errors.push(d.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const l = await lines.next();
    if (l.done === true) throw new Error(`the embedder ended: ${errors.join('')}`);
    const v: unknown = JSON.parse(String(l.value));
    return typeof v === 'object' && v !== null ? { ...v } : {};
  };
  const first = await next();
  return { child, instance: String(first['instance']), next };
};

/** Lists an image's files (path and mode), but what the engine puts into every container. */
const LIST_FILES = `
const fs = require('fs');
const skip = new Set(['/proc', '/sys', '/dev', '/.dockerenv', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/etc/mtab']);
const out = [];
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = (d === '/' ? '' : d) + '/' + e.name;
    if (skip.has(p)) continue;
    out.push(p + ' ' + (fs.lstatSync(p).mode & 0o7777).toString(8));
    if (e.isDirectory()) walk(p);
  }
};
walk('/');
console.log(out.sort().join('\\n'));
`;

/** The files of a Node image (its entrypoint is node), as `path mode` lines. */
const filesOf = async (image: string): Promise<string[]> => {
  const { stdout } = await promisify(execFile)('docker', ['run', '--rm', '--network', 'none', image, '-e', LIST_FILES]);
  return stdout.trim().split('\n');
};

/** What of a session is on the engine: its containers, volumes and images, and its reaper. */
const left = async (instance: string): Promise<{ containers: number; volumes: number; images: number; reapers: number }> => {
  const label = { label: [`lessl.registry=${instance}`] };
  const [containers, volumes, images, reapers] = await Promise.all([
    docker.listContainers({ all: true, filters: label }),
    docker.listVolumes({ filters: label }),
    docker.listImages({ filters: label }),
    docker.listContainers({ all: true, filters: { label: [`lessl.reaper=${instance}`] } }),
  ]);
  return {
    containers: containers.length,
    volumes: (volumes.Volumes ?? []).length,
    images: images.length,
    reapers: reapers.length,
  };
};

const NOTHING = { containers: 0, volumes: 0, images: 0, reapers: 0 };

/** The running reaper of a session, once it runs (by default it starts beside open). */
const reaperOf = async (instance: string): Promise<Docker.ContainerInfo> => {
  let found: Docker.ContainerInfo | undefined;
  const running = async (): Promise<boolean> => {
    [found] = await docker.listContainers({ filters: { label: [`lessl.reaper=${instance}`] } });
    return found !== undefined;
  };
  if (!(await eventually(running)) || found === undefined) throw new Error(`no reaper runs for ${instance}`);
  return found;
};

describe('the reaper', () => {
  test('an embedder SIGKILLed: its container, volume, image and the reaper go without a reopen', async () => {
    const e = await embed();
    await reaperOf(e.instance);
    const before = await left(e.instance);
    expect(before).toEqual({ containers: 1, volumes: 1, images: 1, reapers: 1 });
    const killedAt = Date.now();
    e.child.kill('SIGKILL');
    let gone = NOTHING;
    expect(await eventually(async () => (gone = await left(e.instance)).reapers === 0 && gone.images === 0, 30_000)).toBe(true);
    console.log(`reaped ${JSON.stringify(before)} in ${Date.now() - killedAt} ms (grace ${REAPER_GRACE_MS} ms)`);
    expect(gone).toEqual(NOTHING);
  }, 60_000);

  test('an embedder that closes cleanly: the reaper stands down and nothing of it is reaped', async () => {
    const e = await embed();
    await reaperOf(e.instance);
    e.child.stdin.write('close\n');
    expect(await e.next()).toEqual({ closed: true });
    expect(await eventually(async () => (await left(e.instance)).reapers === 0)).toBe(true);
    // the reaper is gone without removing anything: the daemon, its volume and image stay
    expect(await left(e.instance)).toEqual({ containers: 1, volumes: 1, images: 1, reapers: 0 });
    await purge(docker, e.instance);
  }, 60_000);

  test('the reaper killed: the embedder goes on working; killed in turn, the next open finds its objects as without a reaper', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-reaper-'));
    dirs.push(location);
    const e = await embed({ registry: { location }, reaper: true });
    await docker.getContainer((await reaperOf(e.instance)).Id).kill();
    expect(await eventually(async () => (await left(e.instance)).reapers === 0)).toBe(true);
    e.child.stdin.write('run\n');
    expect(await e.next()).toEqual({ stdout: 'still here\n' });
    e.child.kill('SIGKILL');
    await new Promise((r) => e.child.once('exit', r));
    expect(await left(e.instance)).toEqual({ containers: 1, volumes: 1, images: 1, reapers: 0 });
    const b = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    try {
      expect(b.instanceId).toBe(e.instance);
      expect((await unwrap(b.stores.volume.read('volume://local/data'))).id.key).toBe('volume://local/data');
      const st = await unwrap(b.tasks.status('task://local/d'));
      expect(st.state).toBe('running');
      // a persistent registry has no reaper unless asked
      expect((await left(e.instance)).reapers).toBe(0);
    } finally {
      await b.close();
      await purge(docker, e.instance);
    }
  }, 90_000);

  test('reaper: false starts none; the reaper has no network and holds the engine socket', async () => {
    const off = await unwrap(openDockerBackend({ watch: false, reaper: false }));
    try {
      expect((await left(off.instanceId)).reapers).toBe(0);
    } finally {
      await off.close();
    }
    const on = await unwrap(openDockerBackend({ watch: false }));
    try {
      const info = await docker.getContainer((await reaperOf(on.instanceId)).Id).inspect();
      expect(info.HostConfig.NetworkMode).toBe('none');
      expect(Object.keys(info.NetworkSettings.Networks)).toEqual(['none']);
      expect(info.HostConfig.AutoRemove).toBe(true);
      expect(info.HostConfig.CapDrop).toEqual(['ALL']);
      expect(info.Mounts.map((m) => m.Destination)).toEqual(['/var/run/docker.sock']);
    } finally {
      await on.close();
    }
  });

  test('a connection to the engine cut and back: the reaper is replaced (a failed start tried again), nothing is reaped', async () => {
    const proxy = await engineProxy();
    const b = await unwrap(openDockerBackend({ socketPath: proxy.path, watch: false }));
    /** The session's one reaper, running, once it is not `old` (which is then gone: it can reap no more). */
    const replaced = async (old: string): Promise<Docker.ContainerInfo | undefined> => {
      let now: Docker.ContainerInfo | undefined;
      const other = async (): Promise<boolean> => {
        const all = await docker.listContainers({ all: true, filters: { label: [`lessl.reaper=${b.instanceId}`] } });
        now = all.length === 1 && all[0]?.Id !== old && all[0]?.State === 'running' ? all[0] : undefined;
        return now !== undefined;
      };
      return (await eventually(other, 30_000)) ? now : undefined;
    };
    try {
      await unwrap(b.stores.volume.create({ id: 'volume://local/kept' }));
      // cut, the socket kept: the old reaper's stdin ends and it can still reach the engine
      const first = await reaperOf(b.instanceId);
      proxy.cut();
      const second = await replaced(first.Id);
      expect(second).toBeDefined();
      // cut again at once (often before the new reaper has said it is ready), and its
      // replacement's create refused: the start fails and is tried again
      proxy.refuse = /^POST \/[^ ]*containers\/create/;
      proxy.mode = 'refusing';
      proxy.cut();
      expect(await eventually(() => proxy.refused >= 2, 30_000)).toBe(true);
      proxy.mode = 'pass';
      const third = await replaced(second?.Id ?? '');
      expect(third).toBeDefined();
      // the engine away and back (a new socket file)
      await proxy.down();
      await proxy.up();
      expect(await replaced(third?.Id ?? '')).toBeDefined();
      // every old reaper is gone: none reaped the live session
      expect((await left(b.instanceId)).volumes).toBe(1);
      await unwrap(b.stores.volume.read('volume://local/kept'));
    } finally {
      await b.close();
      await purge(docker, b.instanceId);
      await proxy.close();
    }
  }, 150_000);

  test('the reaper image and the node base of scripts/node-base.sh come from one builder: the same files, this node', async () => {
    const run = promisify(execFile);
    const root = join(import.meta.dirname, '..', '..', '..');
    const tag = `lessl-test/node-base:${process.pid}`;
    const b = await unwrap(openDockerBackend({ reaper: true, watch: false })); // the reaper image is made (when missing) and runs
    await b.close();
    await purge(docker, b.instanceId);
    const { stdout } = await run('bash', [join(root, 'scripts', 'node-base.sh'), tag], { timeout: 300_000 });
    expect(stdout.trim()).toBe(tag);
    try {
      const reaper = `${REAPER_IMAGE.repo}:${REAPER_IMAGE.tag}`;
      const [mine, base] = await Promise.all([filesOf(reaper), filesOf(tag)]);
      expect(mine).toEqual(base);
      expect(mine).toEqual(expect.arrayContaining(['/etc/passwd 644', '/tmp 1777', '/usr/local/bin/node 755']));
      for (const ref of [reaper, tag])
        expect((await docker.getImage(ref).inspect()).Config.Labels?.['lessl.node-version']).toBe(process.version);
    } finally {
      await docker
        .getImage(tag)
        .remove()
        .catch(() => undefined);
    }
  }, 300_000);
});
