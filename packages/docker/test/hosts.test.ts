// A Docker backend over several real engines (h1-h3 of scripts/hosts.sh, each in its own network
// namespace): placement, volumes pulling their executors, images copied engine to engine,
// per-host error tracking (a frozen engine, a dead one), drain, host events, nothing left behind.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as E from 'fp-ts/lib/Either.js';
import { text, unwrap, type LesslEvent } from '@lessl/core';
import { busyboxRootfsBytes, LABEL, openDockerBackend, purge, type DockerBackend, type HostSpec } from '@lessl/docker';
import { Registry, type RegistryReads } from '@lessl/level';
import { engineProxy, eventually, n, startDaemon, tarOf, type EngineProxy } from './support.js';
import { client, hostNamed, testHosts, type TestHost } from './hosts-support.js';

const file = testHosts();
const plain = (file?.hosts ?? []).filter((h) => /^h\d$/.test(h.name));
const spec = (h: TestHost): HostSpec => ({ name: h.name, url: `unix://${h.socket}` });
const rootfs = await busyboxRootfsBytes();

/** lessl-labelled objects of a registry on an engine. */
const leftovers = async (h: TestHost, instance: string): Promise<number> => {
  const d = client(h);
  const f = { label: [`${LABEL.registry}=${instance}`] };
  const [c, i, v] = await Promise.all([
    d.listContainers({ all: true, filters: f }),
    d.listImages({ filters: f }),
    d.listVolumes({ filters: f }),
  ]);
  return c.length + i.length + (v.Volumes ?? []).length;
};

const hostOf = (registry: RegistryReads, id: string): unknown => registry.get(id)?.attributes.host;

/** Unbinds an executor's tasks and deletes it. */
const dispose = async (b: DockerBackend, x: string): Promise<void> => {
  await unwrap(b.composer.commit(await unwrap(b.composer.unbind(await unwrap(b.composer.handle(x))))));
  await unwrap(b.stores.executor.delete(x));
};

describe.runIf(file !== undefined)('several engines', () => {
  let b: DockerBackend;
  let registry: Registry;
  const image = `image://local/${n('base')}`;
  const events: LesslEvent[] = [];

  beforeAll(async () => {
    registry = await Registry.open({ memory: true });
    b = await unwrap(
      openDockerBackend({
        hosts: plain.map(spec),
        hostPolicy: { housekeepingMs: 300, failures: 2 },
        callTimeoutMs: 1500,
        registry,
      }),
    );
    b.events.subscribe({ types: ['host'] }, (e) => events.push(e));
    await unwrap(b.stores.image.create({ id: image, data: rootfs, options: { host: 'h1' } }));
  }, 120_000);

  afterAll(async () => {
    const instance = b.instanceId;
    await b.close();
    for (const h of plain) await purge(client(h), instance);
  });

  test('every host is active, with its endpoint and no load', () => {
    const hosts = b.hosts.list();
    expect(hosts.map((h) => [h.name, h.state])).toEqual(plain.map((h) => [h.name, 'active']));
    expect(hosts[0]?.endpoint).toContain(plain[0]?.socket ?? '?');
  });

  test('placement spreads executors over the hosts (least loaded first)', async () => {
    const xs: string[] = [];
    try {
      for (let i = 0; i < 6; i++) xs.push((await startDaemon(b, image)).x);
      const placed = xs.map((x) => hostOf(registry, x));
      for (const h of plain) expect(placed.filter((p) => p === h.name)).toHaveLength(2);
      expect(b.hosts.list().map((h) => h.load.slots)).toEqual([2, 2, 2]);
    } finally {
      for (const x of xs) await dispose(b, x);
    }
    expect(b.hosts.list().map((h) => h.load.slots)).toEqual([0, 0, 0]);
  }, 120_000);

  test('an image made on one host runs on another (copied engine to engine)', async () => {
    expect(hostOf(registry, image)).toBe('h1');
    const r = await unwrap(
      b.run({ image, spec: { cmd: ['sh', '-c', 'echo hi from $(hostname)'] }, options: { backend: { host: 'h3' } } }),
    );
    expect(r.exitCode).toBe(0);
    const imageId = String(registry.get(image)?.attributes.imageId);
    expect(await client(hostNamed(file!, 'h3')).getImage(imageId).inspect()).toBeDefined();
  }, 60_000);

  test('preload makes an image present on every active host ahead of need', async () => {
    const img = `image://local/${n('pre')}`;
    await unwrap(b.stores.image.create({ id: img, data: rootfs, options: { host: 'h2' } }));
    const r = await unwrap(b.preload([img]));
    expect(r.map((x) => [x.host, x.done])).toEqual([
      ['h1', 'copied'],
      ['h2', 'present'],
      ['h3', 'copied'],
    ]);
    const imageId = String(registry.get(img)?.attributes.imageId);
    for (const h of plain) expect((await client(h).getImage(imageId).inspect()).Id).toBe(imageId);
    const again = await unwrap(b.preload([img], { hosts: ['h3'] }));
    expect(again.map((x) => x.done)).toEqual(['present']);
    const bad = await b.preload([img], { hosts: ['nowhere'] })();
    expect(E.isLeft(bad) && bad.left._tag).toBe('InvalidEntry');
    await unwrap(b.stores.image.delete(img));
    for (const h of plain)
      expect(
        await client(h)
          .getImage(imageId)
          .inspect()
          .then(
            () => true,
            () => false,
          ),
      ).toBe(false);
  }, 60_000);

  test('a volume stays on its host and pulls its executors there', async () => {
    const vol = `volume://local/${n('v')}`;
    await unwrap(b.stores.volume.create({ id: vol, data: await tarOf({ 'hello.txt': 'from h2' }), options: { host: 'h2' } }));
    expect(hostOf(registry, vol)).toBe('h2');
    for (let i = 0; i < 2; i++) {
      const r = await unwrap(
        b.run({ image, volumes: [{ id: vol, mountpoint: '/data' }], spec: { cmd: ['cat', '/data/hello.txt'] } }),
      );
      expect(text(r.stdout)).toBe('from h2');
    }
    // pinned elsewhere: refused, naming both hosts
    const bad = await b.run({
      image,
      volumes: [{ id: vol, mountpoint: '/data' }],
      spec: { cmd: ['true'] },
      options: { backend: { host: 'h1' } },
    })();
    expect(E.isLeft(bad) && bad.left._tag).toBe('InvalidEntry');
    await unwrap(b.stores.volume.delete(vol));
  }, 60_000);

  test('housekeeping sweeps a dangling lessl object off a host', async () => {
    const d = client(hostNamed(file!, 'h2'));
    const name = n('dangling');
    await d.createVolume({
      Name: name,
      Labels: { [LABEL.registry]: b.instanceId, [LABEL.id]: `volume://local/${name}` },
    });
    // every 12th tick (300 ms here) sweeps active hosts
    expect(
      await eventually(
        async () =>
          !(await d
            .getVolume(name)
            .inspect()
            .then(
              () => true,
              () => false,
            )),
        15_000,
      ),
    ).toBe(true);
    expect(b.reconciled.orphansRemoved).toContain(`volume ${name}`);
  }, 30_000);

  test('label constraints: no host carries the label: Unavailable saying why', async () => {
    const r = await b.run({ image, spec: { cmd: ['true'] }, options: { backend: { constraints: { zone: 'mars' } } } })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
    expect(E.isLeft(r) && r.left.message).toContain('label zone');
  });

  test('a frozen engine (SIGSTOP) becomes inactive within the bound; work goes on elsewhere; SIGCONT brings it back', async () => {
    const h3 = hostNamed(file!, 'h3');
    const pid = Number(readFileSync(h3.pidfile, 'utf8').trim());
    process.kill(pid, 'SIGSTOP');
    try {
      const t0 = Date.now();
      // bound: failures (2) x (housekeeping 300 ms + call timeout 1500 ms), plus slack
      expect(await eventually(() => b.hosts.list().find((h) => h.name === 'h3')?.state === 'inactive', 8000)).toBe(true);
      expect(Date.now() - t0).toBeLessThan(8000);
      expect(b.hosts.list().find((h) => h.name === 'h3')?.lastError).toContain('h3');
      // new work avoids it and is not slowed down by it
      for (let i = 0; i < 3; i++) {
        const t1 = Date.now();
        const r = await unwrap(b.run({ image, spec: { cmd: ['echo', 'ok'] } }));
        expect(text(r.stdout)).toBe('ok\n');
        expect(Date.now() - t1).toBeLessThan(1500 + 5000);
      }
      const pinned = await b.run({ image, spec: { cmd: ['true'] }, options: { backend: { host: 'h3' } } })();
      expect(E.isLeft(pinned) && pinned.left._tag).toBe('Unavailable');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(await eventually(() => b.hosts.list().find((h) => h.name === 'h3')?.state === 'active', 15_000)).toBe(true);
    const states = events.filter((e) => e.id.key === 'host://h3').map((e) => e.detail.state);
    expect(states).toEqual(expect.arrayContaining(['inactive', 'active']));
  }, 60_000);

  test('drain: no new work goes there, a running task is stopped after the deadline, the host ends removed', async () => {
    const d = await startDaemon(b, image);
    const on = String(hostOf(registry, d.x));
    const info = await unwrap(b.hosts.drain(on, { deadlineMs: 500 }));
    expect(info.state).toBe('removed');
    const st = await unwrap(b.tasks.wait(d.task));
    expect(st.state).toBe('killed');
    for (let i = 0; i < 3; i++) {
      const x = (await startDaemon(b, image)).x;
      expect(hostOf(registry, x)).not.toBe(on);
      await dispose(b, x);
    }
    await dispose(b, d.x);
  }, 60_000);
});

describe.runIf(file !== undefined)('a dead engine', () => {
  let proxy: EngineProxy;
  let b: DockerBackend;
  const image = `image://local/${n('base')}`;

  beforeAll(async () => {
    proxy = await engineProxy(hostNamed(file!, 'h2').socket);
    b = await unwrap(
      openDockerBackend({
        hosts: [spec(hostNamed(file!, 'h1')), { name: 'h2', url: `unix://${proxy.path}` }],
        hostPolicy: { housekeepingMs: 300, failures: 2 },
        callTimeoutMs: 1500,
      }),
    );
    await unwrap(b.stores.image.create({ id: image, data: rootfs, options: { host: 'h1' } }));
  }, 60_000);

  afterAll(async () => {
    const instance = b.instanceId;
    await b.close();
    await proxy.close();
    for (const h of plain) await purge(client(h), instance);
  });

  test('a killed engine becomes inactive, tasks run on the other, it comes back active when it answers again', async () => {
    await proxy.down();
    expect(await eventually(() => b.hosts.list().find((h) => h.name === 'h2')?.state === 'inactive', 5000)).toBe(true);
    for (let i = 0; i < 3; i++) {
      const r = await unwrap(b.run({ image, spec: { cmd: ['echo', 'ok'] } }));
      expect(r.exitCode).toBe(0);
    }
    await proxy.up();
    expect(await eventually(() => b.hosts.list().find((h) => h.name === 'h2')?.state === 'active', 15_000)).toBe(true);
    const r = await unwrap(b.run({ image, spec: { cmd: ['echo', 'back'] }, options: { backend: { host: 'h2' } } }));
    expect(text(r.stdout)).toBe('back\n');
  }, 60_000);

  test('a host added at run time is spawned, then active once its engine answers', async () => {
    const h3 = hostNamed(file!, 'h3');
    const info = await unwrap(b.hosts.add({ name: 'h3', url: h3.url, tls: h3.tls, labels: { zone: 'c' } }));
    expect(info.state).toBe('active');
    const r = await unwrap(
      b.run({ image, spec: { cmd: ['echo', 'tls'] }, options: { backend: { constraints: { zone: 'c' } } } }),
    );
    expect(text(r.stdout)).toBe('tls\n');
    const dup = await b.hosts.add({ name: 'h3', url: h3.url })();
    expect(E.isLeft(dup) && dup.left._tag).toBe('NameCollision');
    const bad = await b.hosts.add({ name: 'h4', url: 'ftp://nowhere' } as HostSpec)();
    expect(E.isLeft(bad) && bad.left._tag).toBe('InvalidEntry');
  }, 60_000);
});

describe.runIf(file !== undefined)('nothing is left behind', () => {
  test('after a multi-host backend is used and its elements deleted, no labelled object remains on any engine', async () => {
    const b = await unwrap(openDockerBackend({ hosts: plain.map(spec) }));
    const instance = b.instanceId;
    const image = `image://local/${n('base')}`;
    await unwrap(b.stores.image.create({ id: image, data: rootfs, options: { host: 'h1' } }));
    for (const h of plain) await unwrap(b.run({ image, spec: { cmd: ['true'] }, options: { backend: { host: h.name } } }));
    await unwrap(b.stores.image.delete(image));
    await b.close();
    for (const h of plain) expect(await leftovers(h, instance)).toBe(0);
  }, 120_000);
});
