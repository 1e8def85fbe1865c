/**
 * Docker-specific behaviour and faults, against the real engine: image sources, tar checks,
 * task results and limits, in-use by foreign containers, hardening, Docker events mapped in,
 * reconciliation on open, and an engine that goes away and comes back.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256, text, unwrap, utf8, type LesslEvent, type Progress, type TaskSpec } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { engineProxy, n, startDaemon } from './support.js';

const docker = new Docker();
let rootfs: Uint8Array;
let l: DockerBackend;
const BASE = 'image://local/base';

const tarOf = async (
  entries: { name: string; body?: string; type?: 'file' | 'symlink' | 'link' | 'directory'; linkname?: string }[],
): Promise<Uint8Array> => {
  const p = pack();
  for (const e of entries)
    p.entry(
      { name: e.name, type: e.type ?? 'file', ...(e.linkname === undefined ? {} : { linkname: e.linkname }) },
      e.body ?? '',
    );
  p.finalize();
  const parts: Uint8Array[] = [];
  for await (const c of p as AsyncIterable<Uint8Array>) parts.push(c);
  return Buffer.concat(parts);
};

/** Objects of this registry in Docker, by kind. */
const objects = async (b: DockerBackend, id?: string) => {
  const label = [`lessl.registry=${b.instanceId}`, ...(id === undefined ? [] : [`lessl.id=${id}`])];
  return {
    images: (await docker.listImages({ filters: { label } })).length,
    volumes: ((await docker.listVolumes({ filters: { label } })).Volumes ?? []).length,
    containers: (await docker.listContainers({ all: true, filters: { label } })).length,
  };
};

/** Starts one task on a fresh executor (image BASE), waits for its end, answers the commit and the task result. */
const runTask = async (b: DockerBackend, spec: TaskSpec, volumes: { id: string; at: string }[] = []) => {
  const task = `task://local/${n('t')}`;
  await unwrap(b.stores.task.create({ id: task, spec }));
  let h = await unwrap(b.composer.handle(`executor://local/${n('x')}`));
  h = await unwrap(b.composer.join(h, BASE));
  for (const v of volumes) h = await unwrap(b.composer.join(h, v.id, { mountpoint: v.at }));
  h = await unwrap(b.composer.bind(await unwrap(b.composer.join(h, task)), task));
  const commit = await unwrap(b.composer.commit(h));
  const result = commit.committed ? await unwrap(b.tasks.wait(task)) : undefined;
  return { commit, task, executor: h.executor.key, result };
};

beforeAll(async () => {
  rootfs = await busyboxRootfsBytes();
  l = await unwrap(openDockerBackend());
  await unwrap(l.stores.image.create({ id: BASE, data: rootfs }));
});
afterAll(async () => {
  await l.close();
  await purge(docker, l.instanceId);
});

describe('labels', () => {
  test('ro metadata is readable in Docker labels: text as is, other bytes as base64:', async () => {
    const id = `volume://local/${n('labels')}`;
    const el = await unwrap(
      l.stores.volume.create({
        id,
        ro: { ...utf8({ team: 'infra', odd: 'base64:looks encoded' }), raw: new Uint8Array([0, 1, 2]) },
      }),
    );
    const labels = (await docker.getVolume(String(el.attributes.volumeName)).inspect()).Labels ?? {};
    expect([labels['lessl.ro.team'], labels['lessl.ro.raw'], labels['lessl.ro.odd']]).toEqual([
      'infra',
      'base64:AAEC',
      `base64:${Buffer.from('base64:looks encoded').toString('base64')}`,
    ]);
    const found = await docker.listVolumes({ filters: { label: ['lessl.ro.team=infra', `lessl.id=${id}`] } });
    expect(found.Volumes?.map((v) => v.Name)).toEqual([el.attributes.volumeName]);
    await unwrap(l.stores.volume.delete(id));
  });
});

describe('image sources', () => {
  test('registry reference: pulled from the local registry on 127.0.0.1:5000; a missing ref fails and leaves nothing', async () => {
    const base = await unwrap(l.stores.image.read(BASE));
    const repo = `127.0.0.1:5000/lessl-test/${n('busybox')}`;
    await docker.getImage(String(base.attributes.imageId)).tag({ repo, tag: 'v1' });
    const push = await docker.getImage(`${repo}:v1`).push({ authconfig: { serveraddress: '127.0.0.1:5000' } });
    await new Promise<void>((res, rej) => docker.modem.followProgress(push, (e) => (e ? rej(e) : res())));
    await docker.getImage(`${repo}:v1`).remove();
    const id = `image://local/${n('pulled')}`;
    const seen: Progress[] = [];
    const el = await unwrap(
      l.stores.image.create(
        { id, options: { source: { type: 'registry', ref: `${repo}:v1` } } },
        { onProgress: (p) => seen.push(p) },
      ),
    );
    expect(el.attributes.imageId).toBe(base.attributes.imageId);
    expect(seen.filter((p) => p.phase === 'pull').at(-1)?.detail).toMatch(
      /^Status: (Downloaded newer image|Image is up to date)/,
    );
    const missing = `image://local/${n('missing')}`;
    const r = await l.stores.image.create({ id: missing, options: { source: { type: 'registry', ref: `${repo}:nope` } } })();
    expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
    expect(E.isLeft(await l.stores.image.read(missing)())).toBe(true);
    await unwrap(l.stores.image.delete(id));
  });

  test('image tarball: export then load; a tar that is not a docker save archive is InvalidEntry', async () => {
    const saved = await unwrap(l.exportImage(BASE));
    const parts: Uint8Array[] = [];
    for await (const c of saved as AsyncIterable<Uint8Array>) parts.push(c);
    const id = `image://local/${n('loaded')}`;
    const el = await unwrap(l.stores.image.create({ id, data: Buffer.concat(parts), options: { source: { type: 'tarball' } } }));
    expect(String(el.attributes.ref)).toMatch(/^lessl\/local:loaded-/);
    const bad = `image://local/${n('badload')}`;
    const r = await l.stores.image.create({
      id: bad,
      data: await tarOf([{ name: 'x.txt', body: 'x' }]),
      options: { source: { type: 'tarball' } },
    })();
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    await unwrap(l.stores.image.delete(id));
  });
});

describe('bad input leaves nothing behind', () => {
  test('a malformed tar is InvalidEntry: no record, no Docker image', async () => {
    const id = `image://local/${n('garbage')}`;
    const r = await l.stores.image.create({ id, data: Buffer.from('this is not a tar archive, not even close') })();
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    expect(await objects(l, id)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test.each([
    ['a .. path', [{ name: '../escape.txt', body: 'x' }]],
    ['an absolute path', [{ name: '/etc/evil', body: 'x' }]],
    ['a symlink pointing out', [{ name: 'up', type: 'symlink' as const, linkname: '../../etc' }]],
    ['an absolute symlink in a volume', [{ name: 'abs', type: 'symlink' as const, linkname: '/etc/shadow' }]],
  ])('a path escape (%s) in volume data is InvalidEntry; the volume is removed', async (_what, entries) => {
    const id = `volume://local/${n('escape')}`;
    const r = await l.stores.volume.create({ id, data: await tarOf(entries) })();
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    expect(E.isLeft(await l.stores.volume.read(id)())).toBe(true);
    expect(await objects(l, id)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test('a path escape in image data is InvalidEntry; no image', async () => {
    const id = `image://local/${n('escape')}`;
    const r = await l.stores.image.create({ id, parent: BASE, data: await tarOf([{ name: 'a/../../x', body: 'x' }]) })();
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    expect(await objects(l, id)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test('a checksum mismatch removes the imported image', async () => {
    const id = `image://local/${n('sum')}`;
    const r = await l.stores.image.create({ id, data: rootfs, checksum: sha256(utf8({ x: 'other' }).x as Uint8Array) })();
    expect(E.isLeft(r) && r.left._tag).toBe('ChecksumMismatch');
    expect(await objects(l, id)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test('an oversize metadata value is InvalidEntry before anything reaches Docker', async () => {
    const id = `image://local/${n('big')}`;
    const r = await l.stores.image.create({ id, data: rootfs, ro: { big: new Uint8Array(70_000) } })();
    expect(E.isLeft(r) && r.left).toMatchObject({ _tag: 'InvalidEntry', keys: ['big'] });
    expect(await objects(l, id)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test('a missing image and an unknown volume are NotFound at join', async () => {
    const h = await unwrap(l.composer.handle());
    expect(E.isLeft(await l.composer.join(h, 'image://local/nope')()) && 'NotFound').toBe('NotFound');
    const r = await l.composer.join(h, 'volume://local/nope', { mountpoint: '/data' })();
    expect(E.isLeft(r) && r.left._tag).toBe('NotFound');
  });
  test('a local volume with a size is Unsupported (the driver cannot enforce it); tmpfs honours it', async () => {
    const r = await l.stores.volume.create({ id: `volume://local/${n('sized')}`, options: { sizeBytes: 1 << 20 } })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unsupported');
  });
});

describe('the helper image', () => {
  test('volumes with data and from a parent leave no helper image behind once made (and deleted)', async () => {
    const helperGone = async (): Promise<boolean> =>
      docker
        .getImage('lessl/helper:empty')
        .inspect()
        .then(
          () => false,
          (err: { statusCode?: number }) => err.statusCode === 404,
        );
    const parent = `volume://local/${n('helped')}`;
    const child = `volume://local/${n('helped-child')}`;
    await unwrap(l.stores.volume.create({ id: parent, data: await tarOf([{ name: 'in.txt', body: 'forty-two' }]) }));
    expect(await helperGone()).toBe(true);
    // two at once share the helper image; the last one out removes it
    const [a, b] = await Promise.all(
      [
        l.stores.volume.create({ id: child, parent }),
        l.stores.volume.create({ id: `${parent}-2`, data: await tarOf([{ name: 'x.txt', body: 'x' }]) }),
      ].map((te) => te()),
    );
    expect([a?._tag, b?._tag]).toEqual(['Right', 'Right']);
    expect(await helperGone()).toBe(true);
    for (const id of [child, `${parent}-2`, parent]) await unwrap(l.stores.volume.delete(id));
    expect(await helperGone()).toBe(true);
  });
});

describe('tasks', () => {
  test('exit code, stdout and stderr separately and in time order', async () => {
    const { result, commit } = await runTask(l, {
      cmd: ['sh', '-c', 'echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three; exit 7'],
    });
    expect(commit.committed).toBe(true);
    expect(result?.exitCode).toBe(7);
    expect(result?.reason).toBe('exited');
    expect(Buffer.from(result?.stdout ?? []).toString()).toBe('one\nthree\n');
    expect(Buffer.from(result?.stderr ?? []).toString()).toBe('two\n');
    expect(result?.output.map((c) => `${c.stream}:${Buffer.from(c.data).toString().trim()}`)).toEqual([
      'stdout:one',
      'stderr:two',
      'stdout:three',
    ]);
  });
  test('output is fully flushed before the exit code, and capped at the output limit', async () => {
    const full = await runTask(l, { cmd: ['sh', '-c', 'head -c 300000 /dev/zero | tr "\\0" x; exit 0'] });
    expect(full.result?.stdout.byteLength).toBe(300000);
    const capped = await runTask(l, {
      cmd: ['sh', '-c', 'head -c 300000 /dev/zero | tr "\\0" x'],
      limits: { outputBytes: 1000 },
    });
    expect(capped.result?.stdout.byteLength).toBe(1000);
    expect(capped.result?.truncated).toBe(true);
  });
  test('logs with follow stream output as it arrives, before the task ends', async () => {
    const task = `task://local/${n('t')}`;
    await unwrap(l.stores.task.create({ id: task, spec: { cmd: ['sh', '-c', 'echo first; sleep 1; echo second'] } }));
    let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), task)), task));
    await unwrap(l.composer.commit(h));
    const seen: { text: string; running: boolean }[] = [];
    for await (const c of l.tasks.logs(task, { follow: true })) {
      const st = await unwrap(l.tasks.status(task));
      seen.push({ text: Buffer.from(c.data).toString(), running: st.state === 'running' });
    }
    expect(seen.map((x) => x.text).join('')).toBe('first\nsecond\n');
    expect(seen[0]?.running).toBe(true);
  });
  test('a command that does not exist: a task result that says so (exit 127, reason not-found), no container left', async () => {
    const { result, executor } = await runTask(l, { cmd: ['/no/such/binary'] });
    expect(result?.exitCode).toBe(127);
    expect(result?.reason).toBe('not-found');
    expect(Buffer.from(result?.stderr ?? []).toString()).toMatch(/\/no\/such\/binary/);
    expect(await objects(l, executor)).toEqual({ images: 0, volumes: 0, containers: 0 });
  });
  test('a task over its memory limit ends with reason oom', async () => {
    const { result, executor } = await runTask(l, {
      cmd: ['sh', '-c', 'x=$(head -c 100000000 /dev/zero | tr "\\0" a); echo ${#x}'],
      limits: { memoryBytes: 16 << 20 },
    });
    expect(result?.reason).toBe('oom');
    expect(result?.exitCode).toBe(137);
    expect((await objects(l, executor)).containers).toBe(0);
  });
  test('a task past its deadline is killed with reason deadline', async () => {
    const t0 = Date.now();
    const { result, executor } = await runTask(l, { cmd: ['sleep', '30'], limits: { deadlineMs: 500 } });
    expect(result?.reason).toBe('deadline');
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect((await objects(l, executor)).containers).toBe(0);
  });
  test('a task joined to a running executor runs as exec; hardening defaults are applied', async () => {
    const daemon = `task://local/${n('d')}`;
    const probe = `task://local/${n('p')}`;
    await unwrap(l.stores.task.create({ id: daemon, spec: { cmd: ['sleep', '3600'], daemon: true } }));
    await unwrap(
      l.stores.task.create({ id: probe, spec: { cmd: ['sh', '-c', 'echo exec-ok; cat /proc/1/status | grep -i ^CapEff'] } }),
    );
    let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`));
    h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), daemon)), daemon));
    const r1 = await unwrap(l.composer.commit(h));
    expect(r1.committed).toBe(true);
    if (!r1.committed) return;
    const cid = String(r1.executor.attributes.containerId);
    const info = await docker.getContainer(cid).inspect();
    expect(info.HostConfig.NetworkMode).toBe('none');
    expect(info.HostConfig.Privileged).toBe(false);
    expect(info.HostConfig.CapDrop).toEqual(['ALL']);
    expect(info.HostConfig.SecurityOpt).toEqual(['no-new-privileges']);
    expect(info.HostConfig.PidsLimit).toBe(256);
    expect(info.HostConfig.Memory).toBe(512 * 1024 * 1024);
    expect(info.HostConfig.Init).toBe(true);
    const r2 = await unwrap(
      l.composer.commit(await unwrap(l.composer.bind(await unwrap(l.composer.join(r1.handle, probe)), probe))),
    );
    expect(r2.committed).toBe(true);
    const ex = await unwrap(l.tasks.wait(probe));
    expect(ex.exitCode).toBe(0);
    expect(Buffer.from(ex.stdout).toString()).toMatch(/exec-ok\nCapEff:\s+0+\n/);
    const r3 = await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(h.executor))))));
    expect(r3.committed).toBe(true);
    await unwrap(l.stores.executor.delete(h.executor));
    expect((await objects(l, h.executor.key)).containers).toBe(0);
  });
});

describe('in use', () => {
  test('an image used by a foreign container, and a volume it mounts, answer InUse naming it', async () => {
    const img = `image://local/${n('used')}`;
    const vol = `volume://local/${n('used')}`;
    const ie = await unwrap(l.stores.image.create({ id: img, data: rootfs }));
    const ve = await unwrap(l.stores.volume.create({ id: vol }));
    const name = n('foreign');
    const c = await docker.createContainer({
      name,
      Image: String(ie.attributes.imageId),
      Cmd: ['true'],
      HostConfig: { NetworkMode: 'none', Mounts: [{ Type: 'volume', Source: String(ve.attributes.volumeName), Target: '/v' }] },
    });
    try {
      const a = await l.stores.image.delete(img)();
      expect(E.isLeft(a) && a.left).toMatchObject({ _tag: 'InUse', referencedBy: [`docker:container/${name}`] });
      const b = await l.stores.volume.delete(vol)();
      expect(E.isLeft(b) && b.left).toMatchObject({ _tag: 'InUse', referencedBy: [`docker:container/${name}`] });
    } finally {
      await c.remove({ force: true });
    }
    await unwrap(l.stores.image.delete(img));
    await unwrap(l.stores.volume.delete(vol));
  });

  test('an image put onto a parent has no helper label: a task from it runs, a foreign container from it is no helper', async () => {
    // the commit from a helper container blanks lessl.helper: else the image, and every container
    // made from it (labels are inherited), passed for a helper and was removed to free the image
    const child = `image://local/${n('child')}`;
    const ce = await unwrap(
      l.stores.image.create({ id: child, parent: BASE, data: await tarOf([{ name: 'hello.txt', body: 'hi' }]) }),
    );
    const imageId = String(ce.attributes.imageId);
    expect((await docker.getImage(imageId).inspect()).Config.Labels?.['lessl.helper'] ?? '').toBe('');
    const r = await unwrap(l.run({ image: child, spec: { cmd: ['cat', '/hello.txt'] } }));
    expect([r.exitCode, text(r.stdout)]).toEqual([0, 'hi']);
    const name = n('foreign');
    const c = await docker.createContainer({ name, Image: imageId, Cmd: ['true'], HostConfig: { NetworkMode: 'none' } });
    try {
      expect((await c.inspect()).Config.Labels['lessl.registry']).toBe(l.instanceId); // inherited
      const a = await l.stores.image.delete(child)();
      expect(E.isLeft(a) && a.left).toMatchObject({ _tag: 'InUse', referencedBy: [`docker:container/${name}`] });
      expect((await c.inspect()).Name).toBe(`/${name}`);
    } finally {
      await c.remove({ force: true }).catch(() => undefined);
    }
    await unwrap(l.stores.image.delete(child));
  });
});

describe("Docker's own events", () => {
  const collect = (b: DockerBackend) => {
    const seen: LesslEvent[] = [];
    const off = b.events.subscribe({}, (e) => seen.push(e));
    return { seen, off };
  };
  const until = async (pred: () => boolean, ms = 10_000): Promise<void> => {
    const t0 = Date.now();
    while (!pred()) {
      if (Date.now() - t0 > ms) throw new Error('timed out waiting');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  test('a container that dies is unbound with its exit code; removed behind our back it is deleted; no duplicates', async () => {
    const { seen, off } = collect(l);
    const { x, task: daemon, containerId } = await startDaemon(l, BASE, { cmd: ['sh', '-c', 'sleep 0.3; exit 4'], daemon: true });
    await until(() => seen.some((e) => e.type === 'unbound' && e.id.key === daemon));
    const unbound = seen.filter((e) => e.type === 'unbound' && e.id.key === daemon);
    expect(unbound).toHaveLength(1);
    expect(unbound[0]?.detail.exitCode).toBe(4);
    const snap = await unwrap(l.composer.handle(x));
    expect(snap.members.find((m) => m.id.key === daemon)?.state).toBe('unbound');
    // the dead container is removed outside lessl: the executor is deleted
    await docker.getContainer(containerId).remove({ force: true });
    await until(() => seen.some((e) => e.type === 'deleted' && e.id.key === x));
    off();
    expect(E.isLeft(await l.stores.executor.read(x)())).toBe(true);
  });
  test('lessl stopping its own container publishes one unbound, not a second from Docker', async () => {
    const { x, task: daemon } = await startDaemon(l, BASE);
    const { seen, off } = collect(l);
    await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x))))));
    await new Promise((res) => setTimeout(res, 1000));
    off();
    expect(seen.filter((e) => e.type === 'unbound' && e.id.key === daemon)).toHaveLength(1);
    await unwrap(l.stores.executor.delete(x));
  });
  test('a volume removed behind our back is deleted', async () => {
    const vol = `volume://local/${n('gone')}`;
    const el = await unwrap(l.stores.volume.create({ id: vol }));
    const { seen, off } = collect(l);
    await docker.getVolume(String(el.attributes.volumeName)).remove();
    await until(() => seen.some((e) => e.type === 'deleted' && e.id.key === vol));
    off();
    expect(seen.find((e) => e.id.key === vol)?.detail.reason).toMatch(/outside lessl/);
  });
});

describe('reconciliation on open', () => {
  test('vanished objects are deleted with an event; unknown lessl-labelled objects are removed and reported', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-recon-'));
    const a = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    const kept = `volume://local/${n('kept')}`;
    const lost = `volume://local/${n('lost')}`;
    await unwrap(a.stores.volume.create({ id: kept }));
    const lostEl = await unwrap(a.stores.volume.create({ id: lost }));
    const instance = a.instanceId;
    await a.close();
    await docker.getVolume(String(lostEl.attributes.volumeName)).remove();
    // a crash between Docker's write and the registry's: an object with our labels and no record
    const orphan = `lessl_local_orphan_${n('x')}`;
    await docker.createVolume({ Name: orphan, Labels: { 'lessl.id': 'volume://local/ghost', 'lessl.registry': instance } });
    const b = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    try {
      expect(b.reconciled.vanished).toEqual([lost]);
      expect(b.reconciled.orphansRemoved).toEqual([`volume ${orphan}`]);
      expect(E.isRight(await b.stores.volume.read(kept)())).toBe(true);
      expect(E.isLeft(await b.stores.volume.read(lost)())).toBe(true);
      const replay: LesslEvent[] = [];
      for await (const e of b.events.stream({ ids: [lost] }, { since: 0 })) {
        replay.push(e);
        if (e.type === 'deleted') break;
      }
      expect(replay.map((e) => e.type)).toEqual(['created', 'deleted']);
      await expect(docker.getVolume(orphan).inspect()).rejects.toMatchObject({ statusCode: 404 });
    } finally {
      await b.close();
      await purge(docker, instance);
      rmSync(location, { recursive: true, force: true });
    }
  });
});

describe('engine availability', () => {
  test('no engine: openDockerBackend answers Unavailable', async () => {
    const r = await openDockerBackend({ socketPath: join(tmpdir(), `${n('nothing')}.sock`) })();
    expect(E.isLeft(r) && r.left._tag).toBe('Unavailable');
  });
  test('the engine goes away: Unavailable; it comes back: the same backend works again', async () => {
    const proxy = await engineProxy();
    const b = await unwrap(openDockerBackend({ socketPath: proxy.path, watch: false }));
    try {
      const v1 = `volume://local/${n('a')}`;
      await unwrap(b.stores.volume.create({ id: v1 }));
      await proxy.down();
      const down = await b.stores.volume.create({ id: `volume://local/${n('b')}` })();
      expect(E.isLeft(down) && down.left._tag).toBe('Unavailable');
      const del = await b.stores.volume.delete(v1)();
      expect(E.isLeft(del) && del.left._tag).toBe('Unavailable');
      await proxy.up();
      await unwrap(b.stores.volume.create({ id: `volume://local/${n('c')}` }));
      await unwrap(b.stores.volume.delete(v1));
    } finally {
      await b.close();
      await purge(docker, b.instanceId);
      await proxy.close();
    }
  });
});
