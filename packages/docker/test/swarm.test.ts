/**
 * The Swarm executor driver (docs/swarm.md) on the real two-node Swarm of `scripts/hosts.sh`
 * (s1 manager, s2 worker): one-shot and daemon tasks as services, exit codes and output read
 * back through the service's task and logs, placement on both nodes, a volume pinning its
 * executor to its node, what Swarm cannot do answering Unsupported, and nothing left behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap, type ExecutorOptions, type TaskResult } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, type DockerBackend } from '@lessl/docker';
import { client, hostNamed, testHosts } from './hosts-support.js';
import { n } from './support.js';

const hosts = testHosts();

describe.skipIf(hosts === undefined)('Swarm executor driver (s1 manager + s2 worker)', () => {
  const f = hosts!;
  const manager = client(hostNamed(f, f.swarm.manager));
  const worker0 = f.swarm.workers[0] ?? 's2';
  const worker = client(hostNamed(f, worker0));
  const BASE = `image://local/${n('swarm-base')}`;
  /** Services the tests' tasks ran as (from their status), to prove they are gone. */
  const services = new Set<string>();
  const nodeIds = new Map<string, string>();
  let l: DockerBackend;
  /** Deletes image `img`, retrying while it is InUse: Swarm removes a finished task's container shortly after its service. */
  const deleteWhenFree = async (img: string) => {
    const until = Date.now() + 20_000;
    let del = await l.stores.image.delete(img)();
    while (del._tag === 'Left' && del.left._tag === 'InUse' && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      del = await l.stores.image.delete(img)();
    }
    return del;
  };

  /** A one-shot run whose task is kept, to read where it ran. */
  const runKept = async (
    spec: Record<string, unknown>,
    options: ExecutorOptions = {},
    volumes: { id: string; mountpoint: string }[] = [],
  ) => {
    const r: TaskResult = await unwrap(l.run({ image: BASE, spec, options, volumes, keep: true }));
    const st = await unwrap(l.tasks.status(r.id));
    const serviceId = String(st.process?.serviceId);
    services.add(serviceId);
    return { r, node: String(st.process?.nodeId), serviceId };
  };

  beforeAll(async () => {
    l = await unwrap(
      openDockerBackend({
        socketPath: hostNamed(f, f.swarm.manager).socket,
        swarm: {
          registry: f.registry,
          enginesSetNoNewPrivileges: true,
          nodes: [{ name: worker0, url: `unix://${hostNamed(f, worker0).socket}` }],
        },
      }),
    );
    await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
    for (const nd of (await manager.listNodes()) as { ID: string; Description: { Hostname: string } }[])
      nodeIds.set(nd.Description.Hostname, nd.ID);
  });

  afterAll(async () => {
    await l?.close();
  });

  test('the swarm option is decoded exactly: an unknown key or a bad registry is InvalidEntry', async () => {
    const socketPath = hostNamed(f, f.swarm.manager).socket;
    const extra = await openDockerBackend({ socketPath, swarm: { registry: f.registry, replicas: 2 } as never })();
    expect(extra).toMatchObject({ _tag: 'Left', left: { _tag: 'InvalidEntry', keys: ['swarm.replicas'] } });
    const bad = await openDockerBackend({ socketPath, swarm: { registry: 'http://x/' } })();
    expect(bad).toMatchObject({ _tag: 'Left', left: { _tag: 'InvalidEntry', keys: ['swarm.registry'] } });
    const node = { name: 's2', url: 'unix:///x.sock', slots: 1 };
    const extraNode = await openDockerBackend({ socketPath, swarm: { registry: f.registry, nodes: [node] as never } })();
    expect(extraNode).toMatchObject({ _tag: 'Left', left: { _tag: 'InvalidEntry', keys: ['swarm.nodes.slots'] } });
  });

  test('a one-shot task: exit code from the service’s task, stdout and stderr from its logs', async () => {
    const { r, serviceId } = await runKept({ cmd: ['sh', '-c', 'echo out; echo err >&2; printf tail; exit 3'] });
    expect(r.exitCode).toBe(3);
    expect(r.reason).toBe('exited');
    expect(text(r.stdout)).toBe('out\ntail');
    expect(text(r.stderr)).toBe('err\n');
    // the run's end removed the service
    await expect(manager.getService(serviceId).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  test('the service has the mapped settings: replicated 1, restart any for a daemon, dnsrr, hardening, lessl labels', async () => {
    const task = `task://local/${n('spec')}`;
    await unwrap(l.stores.task.create({ id: task, spec: { cmd: ['sleep', '30'], daemon: true } }));
    let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`, { readOnlyRootfs: true, pids: 64 }));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), task)), task));
    const c = await unwrap(l.composer.commit(h));
    expect(c.committed).toBe(true);
    const serviceId = String(c.executor.attributes.serviceId);
    services.add(serviceId);
    const s = (await manager.getService(serviceId).inspect()) as {
      Spec: Docker.ServiceSpec & { TaskTemplate: Docker.ContainerTaskSpec };
    };
    expect(s.Spec.Mode).toEqual({ Replicated: { Replicas: 1 } });
    expect(s.Spec.EndpointSpec?.Mode).toBe('dnsrr');
    expect(s.Spec.EndpointSpec?.Ports ?? []).toEqual([]);
    expect(s.Spec.TaskTemplate.RestartPolicy?.Condition).toBe('any'); // a daemon
    expect(s.Spec.TaskTemplate.ContainerSpec).toMatchObject({
      Image: expect.stringMatching(new RegExp(`^${f.registry.replace(/\./g, '\\.')}/lessl/[0-9a-f]{64}:latest$`)),
      Init: true,
      ReadOnly: true,
      CapabilityDrop: ['ALL'],
    });
    expect(s.Spec.TaskTemplate.Resources?.Limits).toMatchObject({ Pids: 64, MemoryBytes: 512 * 1024 * 1024 });
    expect(s.Spec.Labels).toMatchObject({ 'lessl.id': h.executor.key, 'lessl.task': task });
    await unwrap(l.tasks.kill(task, { graceMs: 500 }));
  });

  test('a daemon task runs until killed; the kill ends its run (killed) and removes its service', async () => {
    const task = `task://local/${n('daemon')}`;
    await unwrap(l.stores.task.create({ id: task, spec: { cmd: ['sh', '-c', 'echo up; exec sleep 3600'], daemon: true } }));
    let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`, { backend: { stopGraceSeconds: 1 } }));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), task)), task));
    const c = await unwrap(l.composer.commit(h));
    expect(c.committed).toBe(true);
    const serviceId = String(c.executor.attributes.serviceId);
    services.add(serviceId);
    await new Promise((r) => setTimeout(r, 1500));
    const running = await unwrap(l.tasks.status(task));
    expect(running.state).toBe('running');
    expect(running.process).toMatchObject({ serviceId });
    const st = await unwrap(l.tasks.kill(task, { graceMs: 1000 }));
    expect(st.state).toBe('killed');
    const r = await unwrap(l.tasks.wait(task));
    expect(text(r.stdout)).toBe('up\n');
    await expect(manager.getService(serviceId).inspect()).rejects.toMatchObject({ statusCode: 404 });
  });

  test('tasks land on both nodes (placement constraints by node)', async () => {
    const on1 = await runKept({ cmd: ['hostname'] }, { backend: { constraints: ['node.hostname==s1'] } });
    const on2 = await runKept({ cmd: ['sh', '-c', 'echo on-worker'] }, { backend: { constraints: ['node.hostname==s2'] } });
    expect(on1.node).toBe(nodeIds.get('s1'));
    expect(on2.node).toBe(nodeIds.get('s2'));
    expect(on2.r.exitCode).toBe(0);
    expect(text(on2.r.stdout)).toBe('on-worker\n');
    // the worker pulled the image from the registry: it has it now
    const images = await worker.listImages();
    expect(images.some((i) => (i.RepoTags ?? []).some((t) => t.startsWith(`${f.registry}/lessl/`)))).toBe(true);
  });

  test('a volume pins its executor to the node where it lives (the manager)', async () => {
    const vol = `volume://local/${n('pinned')}`;
    await unwrap(l.stores.volume.create({ id: vol }));
    const write = await runKept({ cmd: ['sh', '-c', 'echo kept > /data/note'] }, {}, [{ id: vol, mountpoint: '/data' }]);
    const read = await runKept({ cmd: ['cat', '/data/note'] }, {}, [{ id: vol, mountpoint: '/data' }]);
    expect(write.r.exitCode).toBe(0);
    expect(text(read.r.stdout)).toBe('kept\n');
    expect(write.node).toBe(nodeIds.get('s1'));
    expect(read.node).toBe(nodeIds.get('s1'));
    // and no volume of that name appeared on the worker
    const name = String((await unwrap(l.stores.volume.read(vol))).attributes.volumeName);
    expect(((await worker.listVolumes()).Volumes ?? []).map((v) => v.Name)).not.toContain(name);
  });

  test('exec into a running Swarm executor answers Unsupported; so do a network other than none and input', async () => {
    const daemon = `task://local/${n('d')}`;
    const second = `task://local/${n('exec')}`;
    await unwrap(l.stores.task.create({ id: daemon, spec: { cmd: ['sleep', '3600'], daemon: true } }));
    await unwrap(l.stores.task.create({ id: second, spec: { cmd: ['echo', 'no'] } }));
    let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`, { backend: { stopGraceSeconds: 0 } }));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), daemon)), daemon));
    const c = await unwrap(l.composer.commit(h));
    expect(c.committed).toBe(true);
    services.add(String(c.executor.attributes.serviceId));
    let h2 = await unwrap(l.composer.handle(h.executor.key));
    h2 = await unwrap(l.composer.bind(await unwrap(l.composer.join(h2, second)), second));
    const e = await unwrap(l.composer.commit(h2));
    expect(e.committed).toBe(false);
    if (!e.committed) expect(e.error._tag).toBe('Unsupported');
    expect((await unwrap(l.tasks.status(daemon))).state).toBe('running'); // the daemon is untouched
    await unwrap(l.tasks.kill(daemon, { signal: 'KILL' }));

    const net = await l.run({ image: BASE, spec: { cmd: ['true'] }, options: { network: 'bridge' } })();
    expect(net).toMatchObject({ _tag: 'Left', left: { _tag: 'Unsupported' } });
    // a service has no stdin to attach: input is refused naming the spec field
    const input = await l.run({ image: BASE, spec: { cmd: ['cat'] }, stdin: 'in' })();
    expect(input).toMatchObject({ _tag: 'Left', left: { _tag: 'Unsupported', feature: 'spec.interaction.stdin' } });
  });

  test('a daemon survives a close of the backend: the reopened backend follows it, and unbind stops it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lessl-swarm-'));
    const open = () =>
      unwrap(
        openDockerBackend({
          socketPath: hostNamed(f, f.swarm.manager).socket,
          registry: { location: dir },
          swarm: { registry: f.registry, enginesSetNoNewPrivileges: true },
        }),
      );
    try {
      let b = await open();
      const image = `image://local/${n('base')}`;
      await unwrap(b.stores.image.create({ id: image, data: await busyboxRootfsBytes() }));
      const task = `task://local/${n('survivor')}`;
      await unwrap(
        b.stores.task.create({
          id: task,
          spec: { cmd: ['sh', '-c', 'echo before; sleep 2; echo after; exec sleep 3600'], daemon: true },
        }),
      );
      let h = await unwrap(b.composer.handle(`executor://local/${n('x')}`, { backend: { stopGraceSeconds: 1 } }));
      h = await unwrap(b.composer.bind(await unwrap(b.composer.join(await unwrap(b.composer.join(h, image)), task)), task));
      const c = await unwrap(b.composer.commit(h));
      const serviceId = String(c.executor.attributes.serviceId);
      services.add(serviceId);
      await b.close();
      b = await open();
      expect((await unwrap(b.tasks.status(task))).state).toBe('running');
      await new Promise((r) => setTimeout(r, 3000));
      const u = await unwrap(
        b.composer.commit(await unwrap(b.composer.unbind(await unwrap(b.composer.handle(h.executor.key)), task))),
      );
      expect(u.committed).toBe(true);
      const st = await unwrap(b.tasks.status(task));
      expect(st.state).toBe('killed');
      const out: string[] = [];
      for await (const ch of b.tasks.logs(task)) out.push(text(ch.data));
      expect(out.join('')).toBe('before\nafter\n');
      await expect(manager.getService(serviceId).inspect()).rejects.toMatchObject({ statusCode: 404 });
      await b.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('deleting an image removes the copies lessl made: its pushed tag on the manager and its manifest in the registry', async () => {
    const img = `image://local/${n('swarm-del')}`;
    const el = await unwrap(
      l.stores.image.create({ id: img, data: await busyboxRootfsBytes(), ro: { mark: new TextEncoder().encode(n('m')) } }),
    );
    const hex = String(el.attributes.imageId).replace(/^sha256:/, '');
    const r = await unwrap(l.run({ image: img, spec: { cmd: ['true'] } }));
    expect(r.exitCode).toBe(0);
    const manifest = `http://${f.registry}/v2/lessl/${hex}/manifests/latest`;
    const accept = { Accept: 'application/vnd.docker.distribution.manifest.v2+json' };
    expect((await fetch(manifest, { method: 'HEAD', headers: accept })).status).toBe(200);
    expect((await deleteWhenFree(img))._tag).toBe('Right');
    const tagged = (await manager.listImages()).filter((i) => (i.RepoTags ?? []).some((t) => t.includes(`/lessl/${hex}`)));
    expect(tagged).toEqual([]);
    expect((await fetch(manifest, { method: 'HEAD', headers: accept })).status).toBe(404);
  });

  test('deleting an image a run on the worker pulled leaves no copy on s1, on s2 or in the registry', async () => {
    const img = `image://local/${n('swarm-worker-del')}`;
    const el = await unwrap(
      l.stores.image.create({ id: img, data: await busyboxRootfsBytes(), ro: { mark: new TextEncoder().encode(n('w')) } }),
    );
    const imageId = String(el.attributes.imageId);
    const hex = imageId.replace(/^sha256:/, '');
    // pinned to the worker: it pulls the image from the registry
    const r = await unwrap(
      l.run({ image: img, spec: { cmd: ['true'] }, options: { backend: { constraints: [`node.hostname==${worker0}`] } } }),
    );
    expect(r.exitCode).toBe(0);
    await expect(worker.getImage(imageId).inspect()).resolves.toMatchObject({ Id: imageId });
    expect((await deleteWhenFree(img))._tag).toBe('Right');
    for (const d of [manager, worker]) {
      await expect(d.getImage(imageId).inspect()).rejects.toMatchObject({ statusCode: 404 });
      const named = (await d.listImages()).filter((i) =>
        [...(i.RepoTags ?? []), ...(i.RepoDigests ?? [])].some((t) => t.includes(hex)),
      );
      expect(named).toEqual([]);
    }
    const manifest = `http://${f.registry}/v2/lessl/${hex}/manifests/latest`;
    const accept = { Accept: 'application/vnd.docker.distribution.manifest.v2+json' };
    expect((await fetch(manifest, { method: 'HEAD', headers: accept })).status).toBe(404);
  });

  test('a node of swarm.nodes that cannot be reached is logged and does not fail the delete', async () => {
    const warnings: string[] = [];
    const log = {
      debug: () => {},
      info: () => {},
      error: () => {},
      warn: (o: object, m?: string) => void warnings.push(`${m} ${JSON.stringify(o)}`),
    };
    const l2 = await unwrap(
      openDockerBackend({
        socketPath: hostNamed(f, f.swarm.manager).socket,
        logger: log,
        swarm: {
          registry: f.registry,
          enginesSetNoNewPrivileges: true,
          nodes: [{ name: 'gone', url: 'unix:///nonexistent/docker.sock' }],
        },
      }),
    );
    try {
      const img = `image://local/${n('swarm-gone')}`;
      await unwrap(
        l2.stores.image.create({ id: img, data: await busyboxRootfsBytes(), ro: { mark: new TextEncoder().encode(n('g')) } }),
      );
      expect((await l2.stores.image.delete(img)())._tag).toBe('Right');
      expect(warnings.some((w) => w.includes('could not be reached') && w.includes('"node":"gone"'))).toBe(true);
    } finally {
      await l2.close();
    }
  });

  test('nothing is left: no service of this registry, no task container on either node', async () => {
    await new Promise((r) => setTimeout(r, 500));
    const mine = await manager.listServices({ filters: { label: [`lessl.registry=${l.instanceId}`] } });
    expect(mine.map((s) => s.Spec?.Name)).toEqual([]);
    expect(services.size).toBeGreaterThanOrEqual(8);
    // Swarm removes a removed service's containers on each node shortly after
    const left = async (): Promise<string[]> => {
      const out: string[] = [];
      for (const d of [manager, worker])
        for (const c of await d.listContainers({ all: true, filters: { label: ['com.docker.swarm.service.id'] } }))
          if (services.has(c.Labels['com.docker.swarm.service.id'] ?? '')) out.push(c.Names[0] ?? c.Id);
      return out;
    };
    const until = Date.now() + 20_000;
    let rest = await left();
    while (rest.length > 0 && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 250));
      rest = await left();
    }
    expect(rest).toEqual([]);
  });
});
