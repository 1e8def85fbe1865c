/**
 * Task ports on a real engine: a busybox `httpd` daemon in a container with network none, reached
 * with `tasks.connect` both ways: from this machine (a host forwarder in the container's network
 * namespace hands over sockets: this suite runs as root next to the engine) and through the engine
 * (`directPorts: false`: one exec'd forwarder per run, or a warm container's agent), with node's
 * HTTP client over the connection. Also over TLS to engine h1.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { BUSYBOX, busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { CONN_WINDOW } from '../src/agent/forward.js';
import { hostNamed, testHosts } from './hosts-support.js';
import { eventually, httpOver, n } from './support.js';

const docker = new Docker();
const run = promisify(execFile);
const BASE = `image://local/${n('ports-base')}`;
const WWW = `image://local/${n('ports-www')}`;
const BARE = `image://local/${n('ports-bare')}`;
const BIG = 5 * 1024 * 1024;
const big = Buffer.alloc(BIG);
for (let i = 0; i < BIG; i += 4) big.writeUInt32LE((i * 2654435761) >>> 0, i);
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const HTTPD = ['httpd', '-f', '-p', '8080', '-h', '/www'];
/** A CGI script: the sha256 of its input (busybox httpd runs /cgi-bin/*). */
const COUNT = '#!/bin/sh\nprintf \'Content-Type: text/plain\\r\\n\\r\\n\'\nhead -c "$CONTENT_LENGTH" | sha256sum\n';
let l: DockerBackend;
/** The same engine with `directPorts: false`: ports through the engine only. */
let le: DockerBackend;

/** The host forwarders running now (`lessl-agent --sockets <netns>`): their pid, uid and network namespace. */
const hostForwarders = (): { pid: number; uid: number; netns: string; enteredIno: number }[] =>
  readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .flatMap((pid) => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        if (!argv[0]?.endsWith('lessl-agent') || argv[1] !== '--sockets') return [];
        const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
        return [{ pid: Number(pid), uid, netns: argv[2] ?? '', enteredIno: statSync(`/proc/${pid}/ns/net`).ino }];
      } catch {
        return []; // gone meanwhile
      }
    });

/** The execs of a container still running. */
const runningExecs = async (containerId: string): Promise<number> => {
  const ids = (await docker.getContainer(containerId).inspect()).ExecIDs ?? [];
  const states = await Promise.all(ids.map(async (id) => (await docker.getExec(id).inspect()).Running));
  return states.filter(Boolean).length;
};

/** The two ways to a task's ports, each test below runs both. */
const WAYS = [
  { way: 'from this machine', direct: true, backend: () => l },
  { way: 'through the engine', direct: false, backend: () => le },
] as const;

/** A tar of `files` (name -> content, mode). */
const tar = async (files: Record<string, [string | Buffer, number]>): Promise<Uint8Array> => {
  const p = pack();
  for (const [name, [body, mode]] of Object.entries(files)) p.entry({ name, mode }, body);
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) parts.push(c);
  return Buffer.concat(parts);
};

const www = { 'www/index.html': ['hello from httpd\n', 0o644], 'www/big': [big, 0o644] } as const;

/** Binds `spec` as the task of a new executor over `image`; answers the task and its container. */
const start = async (
  b: DockerBackend,
  image: string,
  spec: Record<string, unknown>,
): Promise<{ task: string; containerId: string }> => {
  const task = `task://local/${n('web')}`;
  await unwrap(b.stores.task.create({ id: task, spec }));
  const h = await unwrap(b.composer.join(await unwrap(b.composer.handle(`executor://local/${n('x')}`)), image));
  const r = await unwrap(b.composer.commit(await unwrap(b.composer.bind(await unwrap(b.composer.join(h, task)), task))));
  if (!r.committed) throw new Error(r.error.message);
  return { task, containerId: String(r.executor.attributes.containerId) };
};

/** A GET once the daemon listens (it may still be starting when the commit returns). */
const getWhenUp = async (b: DockerBackend, task: string, path: string): Promise<{ status: number; body: Buffer }> => {
  let conn: Duplex | undefined;
  await eventually(async () => {
    const c = await b.tasks.connect(task, 8080)();
    conn = E.isRight(c) ? c.right : undefined;
    return conn !== undefined;
  });
  if (conn === undefined) throw new Error('the daemon never listened');
  return httpOver(conn, path);
};

beforeAll(async () => {
  l = await unwrap(openDockerBackend());
  le = await unwrap(openDockerBackend({ directPorts: false, reaper: false }));
  for (const b of [l, le]) {
    await unwrap(b.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
    await unwrap(
      b.stores.image.create({ id: WWW, parent: BASE, data: await tar({ ...www, 'www/cgi-bin/count': [COUNT, 0o755] }) }),
    );
    await unwrap(b.stores.image.create({ id: BARE, data: await tar({ 'bin/httpd': [readFileSync(BUSYBOX), 0o755], ...www }) }));
  }
}, 120_000);
afterAll(async () => {
  for (const b of [l, le]) {
    await b.close();
    await purge(docker, b.instanceId);
  }
});

describe.each(WAYS)('$way', ({ direct, backend }) => {
  test('a daemon in a network-none container: GET, 5 MiB down and up intact, 50 connections at once; one forwarder', async () => {
    const b = backend();
    expect(b.supports.ports).toBe(true);
    const { task, containerId } = await start(b, WWW, { cmd: HTTPD, daemon: true, ports: [8080] });
    const first = await getWhenUp(b, task, '/index.html');
    expect([first.status, first.body.toString()]).toEqual([200, 'hello from httpd\n']);
    const down = await httpOver(await unwrap(b.tasks.connect(task, 8080)), '/big');
    expect(sha(down.body)).toBe(sha(big));
    const up = await httpOver(await unwrap(b.tasks.connect(task, 8080)), '/cgi-bin/count', big);
    expect(up.body.toString().split(' ')[0]).toBe(sha(big));
    const many = await Promise.all(
      Array.from({ length: 50 }, async () => httpOver(await unwrap(b.tasks.connect(task, 8080)), '/index.html')),
    );
    expect(many.every((m) => m.status === 200 && m.body.toString() === 'hello from httpd\n')).toBe(true);
    const info = await docker.getContainer(containerId).inspect();
    expect(info.HostConfig.NetworkMode).toBe('none');
    // from this machine: no exec, one forwarder here, as nobody, in the container's namespace
    expect(info.ExecIDs ?? []).toHaveLength(direct ? 0 : 1);
    const mine = hostForwarders().filter((f) => f.netns === info.NetworkSettings.SandboxKey);
    expect(mine.map((f) => [f.uid, f.enteredIno])).toEqual(
      direct ? [[65534, statSync(`/proc/${info.State.Pid}/ns/net`).ino]] : [],
    );
    await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
    await unwrap(b.tasks.wait(task));
    // the run's end ends its forwarder (the exec, or the process here)
    expect(
      await eventually(
        async () => (await runningExecs(containerId)) === 0 && hostForwarders().every((f) => f.pid !== mine[0]?.pid),
      ),
    ).toBe(true);
  });

  test('nothing listening is Unavailable; the task killed: open connections end, connect is Unavailable, no exec left running', async () => {
    const b = backend();
    const quiet = await start(b, WWW, { cmd: ['sleep', '3600'], daemon: true, ports: [8080] });
    const refused = await b.tasks.connect(quiet.task, 8080)();
    expect(E.isLeft(refused) && refused.left).toMatchObject({ _tag: 'Unavailable' });
    expect(E.isLeft(refused) && refused.left.message).toContain('port 8080');
    await unwrap(b.tasks.kill(quiet.task, { signal: 'KILL' }));
    const { task, containerId } = await start(b, WWW, { cmd: HTTPD, daemon: true, ports: [8080] });
    await getWhenUp(b, task, '/index.html');
    const open = await unwrap(b.tasks.connect(task, 8080));
    const sandbox = (await docker.getContainer(containerId).inspect()).NetworkSettings.SandboxKey;
    expect(hostForwarders().some((f) => f.netns === sandbox)).toBe(direct);
    open.on('error', () => undefined);
    const closed = new Promise((r) => open.once('close', r));
    await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
    await unwrap(b.tasks.wait(task));
    await closed;
    expect(await b.tasks.connect(task, 8080)()).toMatchObject({ left: { _tag: 'Unavailable' } });
    expect(await runningExecs(containerId)).toBe(0);
    expect(await eventually(() => !hostForwarders().some((f) => f.netns === sandbox))).toBe(true);
  });

  test('a backend that closes ends its forwarders: the daemon runs on, its connections end, no exec stays running', async () => {
    const b = await unwrap(openDockerBackend({ reaper: false, directPorts: direct }));
    try {
      await unwrap(b.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
      await unwrap(b.stores.image.create({ id: WWW, parent: BASE, data: await tar(www) }));
      const { task, containerId } = await start(b, WWW, { cmd: HTTPD, daemon: true, ports: [8080] });
      await getWhenUp(b, task, '/index.html');
      const open = await unwrap(b.tasks.connect(task, 8080));
      open.on('error', () => undefined);
      const closed = new Promise((r) => open.once('close', r));
      await b.close();
      await closed;
      const info = await docker.getContainer(containerId).inspect();
      expect(info.State.Running).toBe(true);
      const gone = async (): Promise<boolean> =>
        (await runningExecs(containerId)) === 0 && !hostForwarders().some((f) => f.netns === info.NetworkSettings.SandboxKey);
      expect(await eventually(gone)).toBe(true);
    } finally {
      await b.close();
      await purge(docker, b.instanceId);
    }
  });

  test('a daemon Docker restarts (restart policy) is reached again after its restart (a new forwarder)', async () => {
    const b = backend();
    const once = 'httpd -f -p 8080 -h /www & sleep 2; exit 1';
    const spec = { cmd: ['sh', '-c', once], daemon: true, restart: { policy: 'on-failure', maxRetries: 5 }, ports: [8080] };
    const { task, containerId } = await start(b, WWW, spec);
    expect((await getWhenUp(b, task, '/index.html')).status).toBe(200);
    const restarted = async (): Promise<boolean> => (await docker.getContainer(containerId).inspect()).RestartCount > 0;
    expect(await eventually(restarted)).toBe(true);
    expect((await getWhenUp(b, task, '/index.html')).status).toBe(200);
    await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
  });

  test('a task exec’d into a running executor serves its port; its forwarder ends with it', async () => {
    const b = backend();
    const main = `task://local/${n('main')}`;
    await unwrap(b.stores.task.create({ id: main, spec: { cmd: ['sleep', '3600'], daemon: true } }));
    const side = `task://local/${n('side')}`;
    await unwrap(b.stores.task.create({ id: side, spec: { cmd: ['httpd', '-f', '-p', '8081', '-h', '/www'], ports: [8081] } }));
    const h0 = await unwrap(b.composer.join(await unwrap(b.composer.handle(`executor://local/${n('x')}`)), WWW));
    const r = await unwrap(b.composer.commit(await unwrap(b.composer.bind(await unwrap(b.composer.join(h0, main)), main))));
    const containerId = String(r.committed && r.executor.attributes.containerId);
    const h1 = await unwrap(b.composer.handle(h0.executor.key));
    await unwrap(b.composer.commit(await unwrap(b.composer.bind(await unwrap(b.composer.join(h1, side)), side))));
    let got: { status: number; body: Buffer } | undefined;
    await eventually(async () => {
      const c = await b.tasks.connect(side, 8081)();
      got = E.isRight(c) ? await httpOver(c.right, '/index.html') : undefined;
      return got !== undefined;
    });
    expect(got?.body.toString()).toBe('hello from httpd\n');
    await unwrap(b.tasks.kill(side, { signal: 'KILL' }));
    await unwrap(b.tasks.wait(side));
    const sandbox = (await docker.getContainer(containerId).inspect()).NetworkSettings.SandboxKey;
    const gone = async (): Promise<boolean> =>
      (await runningExecs(containerId)) === 0 && !hostForwarders().some((f) => f.netns === sandbox);
    expect(await eventually(gone)).toBe(true);
    await unwrap(b.tasks.kill(main, { signal: 'KILL' }));
  });

  test('a warm pool task with ports is reached without an exec (here, or through the pool container’s agent)', async () => {
    const b = backend();
    await unwrap(b.pool.configure([{ image: WWW, min: 1 }]));
    expect(await eventually(() => b.pool.stats().profiles.some((p) => p.ready >= 1 && p.runsWith === 'agent'))).toBe(true);
    const { hits } = b.pool.stats();
    const { task, containerId } = await start(b, WWW, { cmd: HTTPD, ports: [8080] });
    expect(b.pool.stats().hits).toBe(hits + 1);
    const r = await getWhenUp(b, task, '/index.html');
    expect(r.body.toString()).toBe('hello from httpd\n');
    expect((await docker.getContainer(containerId).inspect()).ExecIDs ?? []).toHaveLength(0);
    await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
    await unwrap(b.tasks.wait(task));
    expect(await b.tasks.connect(task, 8080)()).toMatchObject({ left: { _tag: 'Unavailable' } });
    await unwrap(b.pool.configure([]));
  });
});

test('a slow reader holds a bounded amount; then the whole body arrives', async () => {
  const { task } = await start(l, WWW, { cmd: HTTPD, daemon: true, ports: [8080] });
  await getWhenUp(l, task, '/index.html');
  const conn = await unwrap(l.tasks.connect(task, 8080));
  conn.write('GET /big HTTP/1.0\r\nHost: task\r\n\r\n');
  await eventually(() => false, 1500); // reads nothing meanwhile
  expect(conn.readableLength).toBeGreaterThan(0);
  expect(conn.readableLength).toBeLessThanOrEqual(2 * CONN_WINDOW);
  const parts: Buffer[] = [];
  conn.on('data', (c: Buffer) => parts.push(c));
  await new Promise((r) => conn.once('end', r));
  const all = Buffer.concat(parts);
  expect(sha(all.subarray(all.indexOf('\r\n\r\n') + 4))).toBe(sha(big));
  await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
});

test('an image with no shell (busybox as /bin/httpd only) serves its port', async () => {
  const { task } = await start(l, BARE, { cmd: ['/bin/httpd', '-f', '-p', '8080', '-h', '/www'], daemon: true, ports: [8080] });
  const r = await getWhenUp(l, task, '/index.html');
  expect(r.body.toString()).toBe('hello from httpd\n');
  await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
});

test('a process that may not enter namespaces (root without CAP_SYS_ADMIN) reaches ports through the engine', async () => {
  // its first host forwarder starts, cannot enter (exit 125, said on stderr): ports go the engine's way from then on
  const script = fileURLToPath(new URL('./fixtures/ports-without-setns.mjs', import.meta.url));
  const { stdout } = await run('setpriv', ['--bounding-set=-sys_admin', '--inh-caps=-sys_admin', process.execPath, script], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
  });
  // the first run tried (its forwarder said why, once), both went through the engine (an exec each)
  expect(JSON.parse(stdout)).toEqual({
    first: ['first\n', 1],
    second: ['second\n', 1],
    warnings: { cannotEnter: 1, fromNowOn: 1 },
  });
}, 60_000);

test('refused at commit: a read-only root filesystem, and a backend with agent: false (whose manifest says no ports)', async () => {
  const task = `task://local/${n('ro')}`;
  await unwrap(l.stores.task.create({ id: task, spec: { cmd: HTTPD, daemon: true, ports: [8080] } }));
  const h = await unwrap(
    l.composer.join(await unwrap(l.composer.handle(`executor://local/${n('x')}`, { readOnlyRootfs: true })), WWW),
  );
  const r = await unwrap(l.composer.commit(await unwrap(l.composer.bind(await unwrap(l.composer.join(h, task)), task))));
  expect(!r.committed && r.error).toMatchObject({ _tag: 'Unsupported', feature: 'spec.ports' });
  const off = await unwrap(openDockerBackend({ agent: false }));
  try {
    expect(off.supports.ports).toBe(false);
    await unwrap(off.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
    const t = await start(off, BASE, { cmd: HTTPD, daemon: true, ports: [8080] }).catch((e: unknown) => e);
    expect(t instanceof Error && t.message).toContain('spec.ports');
  } finally {
    await off.close();
    await purge(docker, off.instanceId);
  }
});

const hosts = testHosts();
describe.runIf(hosts !== undefined)('remote engines', () => {
  test('a Swarm executor refuses ports at commit (a service’s task may run on another node); its manifest says no ports', async () => {
    const f = hosts!;
    const manager = hostNamed(f, f.swarm.manager);
    const b = await unwrap(openDockerBackend({ socketPath: manager.socket, swarm: { registry: f.registry } }));
    try {
      expect(b.supports.ports).toBe(false);
      await unwrap(b.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
      const r = await start(b, BASE, { cmd: HTTPD, daemon: true, ports: [8080] }).catch((e: unknown) => e);
      expect(r instanceof Error && r.message).toContain('spec.ports');
    } finally {
      await b.close();
      await purge(new Docker({ socketPath: manager.socket }), b.instanceId);
    }
  }, 120_000);

  test('engine h1 over TCP/TLS: a daemon’s port is reached through the engine API', async () => {
    const h1 = hostNamed(hosts!, 'h1');
    // directPorts: false: h1 runs on this machine, whose forwarder would reach it directly
    const b = await unwrap(openDockerBackend({ hosts: [{ name: 'h1', url: h1.url, tls: h1.tls }], directPorts: false }));
    try {
      expect(b.supports.ports).toBe(true);
      await unwrap(b.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
      await unwrap(b.stores.image.create({ id: WWW, parent: BASE, data: await tar(www) }));
      const { task } = await start(b, WWW, { cmd: HTTPD, daemon: true, ports: [8080] });
      const r = await getWhenUp(b, task, '/big');
      expect(sha(r.body)).toBe(sha(big));
      await unwrap(b.tasks.kill(task, { signal: 'KILL' }));
    } finally {
      await b.close();
      await purge(new Docker({ socketPath: h1.socket }), b.instanceId);
    }
  }, 120_000);
});
