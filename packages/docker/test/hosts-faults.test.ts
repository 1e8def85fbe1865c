// Many engines under faults (the real engines of scripts/hosts.sh): a frozen engine never slows
// work of the same image on healthy hosts; a frozen or killed engine is inactive within the
// documented bound and its tasks end `lost` naming it, their slots freed, while the backend stays
// open; TLS failures are failures of the host; a burst of placements spreads over idle hosts.
// SIGSTOP/SIGKILL only ever touch h2/h3 and every test leaves them up (runs under the docker lock).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type Server } from 'node:tls';
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as E from 'fp-ts/lib/Either.js';
import { text, unwrap, type TaskStatus } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend, type HostSpec } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { eventually, n } from './support.js';
import { client, hostNamed, testHosts, type TestHost } from './hosts-support.js';

const file = testHosts();
const plain = (file?.hosts ?? []).filter((h) => /^h\d$/.test(h.name));
const spec = (h: TestHost): HostSpec => ({ name: h.name, url: `unix://${h.socket}` });
const rootfs = await busyboxRootfsBytes();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const pidOf = (h: TestHost): number => Number(readFileSync(h.pidfile, 'utf8').trim());
const stateOf = (b: DockerBackend, name: string): string | undefined => b.hosts.list().find((h) => h.name === name)?.state;
const slotsOf = (b: DockerBackend, name: string): number | undefined => b.hosts.list().find((h) => h.name === name)?.load.slots;

/** Opens a backend over h1-h3 with an image on h1, present on every host. */
const openWithImage = async (
  o: Parameters<typeof openDockerBackend>[0] = {},
): Promise<{ b: DockerBackend; image: string; registry: Registry }> => {
  const registry = await Registry.open({ memory: true });
  const b = await unwrap(openDockerBackend({ hosts: plain.map(spec), registry, ...o }));
  const image = `image://local/${n('base')}`;
  await unwrap(b.stores.image.create({ id: image, data: rootfs, options: { host: 'h1' } }));
  await unwrap(b.preload([image]));
  return { b, image, registry };
};

const closeAndPurge = async (b: DockerBackend | undefined): Promise<void> => {
  if (b === undefined) return;
  const instance = b.instanceId;
  await b.close();
  for (const h of plain) await purge(client(h), instance).catch(() => 0);
};

/** A daemon task started in a new executor on `host`. */
const daemonOn = async (b: DockerBackend, image: string, host?: string): Promise<{ x: string; task: string }> => {
  const task = `task://local/${n('d')}`;
  await unwrap(b.stores.task.create({ id: task, spec: { cmd: ['sleep', '3600'], daemon: true } }));
  let h = await unwrap(b.composer.handle(`executor://local/${n('x')}`, host === undefined ? undefined : { backend: { host } }));
  h = await unwrap(b.composer.bind(await unwrap(b.composer.join(await unwrap(b.composer.join(h, image)), task)), task));
  const r = await unwrap(b.composer.commit(h));
  if (!r.committed) throw new Error(`the daemon did not start: ${r.error.message}`);
  return { x: h.executor.key, task };
};

/** A one-shot run pinned to `host`, timed. */
const timedRun = async (b: DockerBackend, image: string, host: string): Promise<number> => {
  const t0 = Date.now();
  const r = await unwrap(b.run({ image, spec: { cmd: ['echo', 'ok'] }, options: { backend: { host } } }));
  expect(text(r.stdout)).toBe('ok\n');
  return Date.now() - t0;
};

/** Brings the test engines back up (a killed one is restarted) and waits until they answer. */
const hostsUp = (): void => {
  execFileSync('bash', [join(import.meta.dirname, '../../../scripts/hosts.sh'), 'up'], { stdio: 'pipe', timeout: 120_000 });
};

describe.runIf(file !== undefined)('a frozen engine', () => {
  let b: DockerBackend | undefined;
  afterAll(() => closeAndPurge(b));

  test('does not slow runs of the same image on healthy hosts (a run on it hangs in its start step)', async () => {
    // housekeeping far away: h2 stays active, so its hung call is what the others could queue behind
    const o = await openWithImage({ hostPolicy: { housekeepingMs: 600_000 }, callTimeoutMs: 10_000 });
    b = o.b;
    const { image } = o;
    let baseline = 0;
    for (let i = 0; i < 3; i++) baseline = Math.max(baseline, await timedRun(o.b, image, 'h1'));
    const h2 = hostNamed(file!, 'h2');
    const pid = pidOf(h2);
    process.kill(pid, 'SIGSTOP');
    let stuck: Promise<unknown> | undefined;
    let during: number;
    try {
      stuck = o.b.run({ image, spec: { cmd: ['true'] }, options: { backend: { host: 'h2' } } })();
      await sleep(300);
      await timedRun(o.b, image, 'h1'); // a last use of the image to write down
      await sleep(2500); // the last-use bookkeeping runs (every 2 s) while the run on h2 hangs
      during = await timedRun(o.b, image, 'h1');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await stuck;
    // generous: a run on h1 is not held up by h2's hung call (which lasts up to 10 s)
    expect(during).toBeLessThan(Math.max(2500, 5 * baseline));
  }, 90_000);
});

describe.runIf(file !== undefined)('engines that stop answering (default host policy)', () => {
  let b: DockerBackend;
  let image: string;
  beforeAll(async () => {
    ({ b, image } = await openWithImage());
  }, 120_000);
  afterAll(async () => {
    await closeAndPurge(b);
    hostsUp();
  }, 150_000);

  /** Waits for a task's end, bounded. */
  const ended = async (task: string, ms: number): Promise<TaskStatus | 'still running'> => {
    const ac = new AbortController();
    const t = setTimeout(() => ac.abort(), ms);
    const r = await b.tasks.wait(task, { signal: ac.signal })();
    clearTimeout(t);
    if (E.isLeft(r)) return 'still running';
    return unwrap(b.tasks.status(task));
  };

  test('a frozen engine is inactive within housekeepingMs + 2 x pingTimeoutMs; its task ends lost naming it; it comes back', async () => {
    const d = await daemonOn(b, image, 'h2');
    expect(slotsOf(b, 'h2')).toBe(1);
    const h2 = hostNamed(file!, 'h2');
    const pid = pidOf(h2);
    process.kill(pid, 'SIGSTOP');
    let st: TaskStatus | 'still running';
    let inactiveAfter = Infinity;
    try {
      const t0 = Date.now();
      // defaults: 2 s housekeeping + 2 x 3 s ping = 8 s, plus slack for a loaded machine
      st = await ended(d.task, 12_000);
      if (stateOf(b, 'h2') === 'inactive') inactiveAfter = Date.now() - t0;
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(inactiveAfter).toBeLessThan(12_000);
    expect(st).not.toBe('still running');
    if (st === 'still running') return;
    expect(st.state).toBe('lost');
    expect(st.process?.host).toBe('h2');
    expect(String(st.process?.lost)).toContain('h2');
    expect(slotsOf(b, 'h2')).toBe(0);
    // back: active again, and the lost run's container is removed there
    expect(await eventually(() => stateOf(b, 'h2') === 'active', 20_000)).toBe(true);
    const left = async (): Promise<number> =>
      (await client(h2).listContainers({ all: true, filters: { label: [`lessl.id=${d.x}`] } })).length;
    expect(await eventually(async () => (await left()) === 0, 20_000)).toBe(true);
    expect(await timedRun(b, image, 'h2')).toBeGreaterThan(0);
  }, 90_000);

  test('a killed engine (SIGKILL): its daemon task ends lost and its slot frees, the backend stays open; restarted, it is used again', async () => {
    const d = await daemonOn(b, image, 'h3');
    const h3 = hostNamed(file!, 'h3');
    process.kill(pidOf(h3), 'SIGKILL');
    let st: TaskStatus | 'still running';
    try {
      st = await ended(d.task, 12_000);
    } finally {
      hostsUp(); // restarts h3
    }
    expect(st).not.toBe('still running');
    if (st === 'still running') return;
    expect(st.state).toBe('lost');
    expect(st.process?.host).toBe('h3');
    expect(slotsOf(b, 'h3')).toBe(0);
    expect(await eventually(() => stateOf(b, 'h3') === 'active', 20_000)).toBe(true);
    const left = async (): Promise<number> =>
      (await client(h3).listContainers({ all: true, filters: { label: [`lessl.id=${d.x}`] } })).length;
    expect(await eventually(async () => (await left()) === 0, 20_000)).toBe(true);
    expect(await timedRun(b, image, 'h3')).toBeGreaterThan(0);
  }, 180_000);
});

describe.runIf(file !== undefined)('placement under a burst', () => {
  let b: DockerBackend;
  let image: string;
  let registry: Registry;
  beforeAll(async () => {
    ({ b, image, registry } = await openWithImage());
  }, 120_000);
  afterAll(() => closeAndPurge(b));

  test('six daemons committed together on three idle hosts land 2/2/2', async () => {
    const ds = await Promise.all(Array.from({ length: 6 }, () => daemonOn(b, image)));
    const on = ds.map((d) => String(registry.get(d.x)?.attributes.host));
    const count = (h: string): number => on.filter((x) => x === h).length;
    expect([count('h1'), count('h2'), count('h3')]).toEqual([2, 2, 2]);
    expect(plain.map((h) => slotsOf(b, h.name))).toEqual([2, 2, 2]);
  }, 120_000);
});

/** openssl, quietly. */
const openssl = (...args: string[]): void => void execFileSync('openssl', args, { stdio: 'pipe' });

/** A key and a certificate for `cn` (with `san`), signed by the CA `ca` (a prefix: `<ca>.pem`, `<ca>-key.pem`), or self-signed as a CA. */
const makeCert = (dir: string, name: string, o: { ca?: string; san?: string; usage?: string }): void => {
  const key = join(dir, `${name}-key.pem`);
  const pem = join(dir, `${name}.pem`);
  openssl('genrsa', '-out', key, '2048');
  if (o.ca === undefined) {
    openssl('req', '-x509', '-new', '-key', key, '-sha256', '-days', '2', '-subj', `/CN=${name}`, '-out', pem);
    return;
  }
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  openssl('req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', csr);
  execFileSync('sh', [
    '-c',
    `printf '%s\\n' "$1" > "$2"`,
    'sh',
    `${o.san === undefined ? '' : `subjectAltName = ${o.san}\n`}extendedKeyUsage = ${o.usage ?? 'clientAuth'}`,
    ext,
  ]);
  openssl(
    'x509',
    '-req',
    '-in',
    csr,
    '-CA',
    `${o.ca}.pem`,
    '-CAkey',
    `${o.ca}-key.pem`,
    '-CAcreateserial',
    '-days',
    '2',
    '-sha256',
    '-extfile',
    ext,
    '-out',
    pem,
  );
};

describe.runIf(file !== undefined)('TLS failures are failures of the host', () => {
  let b: DockerBackend;
  let image: string;
  let dir: string;
  let proxy: Server;
  const conns = new Set<Socket>();
  const testCa = (): string => join(dirnameOf(file!.hosts[0]!.tls.ca), 'ca'); // the test CA of scripts/hosts.sh (ca.pem, ca-key.pem)
  const dirnameOf = (p: string): string => p.slice(0, p.lastIndexOf('/'));

  beforeAll(async () => {
    ({ b, image } = await openWithImage());
    dir = mkdtempSync(join(tmpdir(), 'lessl-tls-'));
    makeCert(dir, 'rogue-ca', {});
    makeCert(dir, 'rogue-client', { ca: join(dir, 'rogue-ca') });
    makeCert(dir, 'rogue-server', { ca: join(dir, 'rogue-ca'), san: 'IP:127.0.0.1', usage: 'serverAuth' });
    makeCert(dir, 'good-server', { ca: testCa(), san: 'IP:127.0.0.1', usage: 'serverAuth' });
    // an engine endpoint whose certificate can change: TLS here, h1's unix socket behind
    const h1 = hostNamed(file!, 'h1');
    proxy = createServer(
      { key: readFileSync(join(dir, 'good-server-key.pem')), cert: readFileSync(join(dir, 'good-server.pem')) },
      (c) => {
        const up = createConnection(h1.socket);
        conns.add(c).add(up);
        c.pipe(up).pipe(c);
        const close = (): void => {
          c.destroy();
          up.destroy();
        };
        c.on('error', close).on('close', close);
        up.on('error', close).on('close', close);
      },
    );
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
  }, 120_000);

  afterAll(async () => {
    for (const c of conns) c.destroy();
    await new Promise((r) => proxy.close(r));
    await closeAndPurge(b);
    rmSync(dir, { recursive: true, force: true });
  });

  test('registration with garbage PEM: InvalidEntry naming the host', async () => {
    const h1 = hostNamed(file!, 'h1');
    const r = await b.hosts.add({
      name: 'bad-pem',
      url: h1.url,
      tls: { ca: '-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n', cert: h1.tls.cert, key: h1.tls.key },
    })();
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    expect(E.isLeft(r) && r.left.message).toContain('bad-pem');
    expect(b.hosts.list().map((h) => h.name)).not.toContain('bad-pem');
  });

  test('registration with a client certificate of another CA: Unavailable naming the host and TLS', async () => {
    const h1 = hostNamed(file!, 'h1');
    const tls = { ca: h1.tls.ca, cert: join(dir, 'rogue-client.pem'), key: join(dir, 'rogue-client-key.pem') };
    const r = await b.hosts.add({ name: 'other-ca', url: h1.url, tls })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
    expect(E.isLeft(r) && r.left.message).toMatch(/other-ca.*TLS/);
    expect(b.hosts.list().map((h) => h.name)).not.toContain('other-ca');
  });

  test('registration with a server the CA does not sign: Unavailable naming the host and TLS', async () => {
    const h1 = hostNamed(file!, 'h1');
    const tls = { ca: join(dir, 'rogue-ca.pem'), cert: h1.tls.cert, key: h1.tls.key };
    const r = await b.hosts.add({ name: 'unsigned', url: h1.url, tls })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
    expect(E.isLeft(r) && r.left.message).toMatch(/unsigned.*TLS.*certificate/);
  });

  test('an active host whose endpoint starts presenting an untrusted certificate: runs answer Unavailable naming it, it becomes inactive', async () => {
    const h1 = hostNamed(file!, 'h1');
    const port = (proxy.address() as { port: number }).port;
    const info = await unwrap(
      b.hosts.add({ name: 'flip', url: `https://127.0.0.1:${port}`, tls: h1.tls, labels: { via: 'flip' } }),
    );
    expect(info.state).toBe('active');
    expect(
      text((await unwrap(b.run({ image, spec: { cmd: ['echo', 'tls'] }, options: { backend: { host: 'flip' } } }))).stdout),
    ).toBe('tls\n');
    proxy.setSecureContext({
      key: readFileSync(join(dir, 'rogue-server-key.pem')),
      cert: readFileSync(join(dir, 'rogue-server.pem')),
    });
    for (const c of conns) c.destroy(); // the engine's next connections present the rogue certificate
    const r = await b.run({ image, spec: { cmd: ['true'] }, options: { backend: { host: 'flip' } } })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
    expect(E.isLeft(r) && r.left.message).toContain('flip');
    expect(await eventually(() => stateOf(b, 'flip') === 'inactive', 12_000)).toBe(true);
    expect(b.hosts.list().find((h) => h.name === 'flip')?.lastError).toMatch(/certificate/);
  }, 60_000);
});
