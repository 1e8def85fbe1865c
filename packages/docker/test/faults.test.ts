/**
 * Docker faults leave nothing behind: removals that fail are retried until done and never named
 * as users; labelled objects Docker finishes after recovery ran are removed; an embedding process
 * killed at many points of image and volume creates leaves, after the next open, no labelled
 * object without its element and no record of a half-made element. Everything removed is listed
 * in `backend.reconciled`.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { Registry, type RegistryReads } from '@lessl/level';
import { engineProxy, eventually, n, tarOf, type EngineProxy } from './support.js';

const docker = new Docker();
const BASE = 'image://local/base';
const fixture = (f: string): string => join(import.meta.dirname, 'fixtures', f);

/** Helper containers of a registry. */
const helpers = async (instance: string): Promise<number> =>
  (await docker.listContainers({ all: true, filters: { label: [`lessl.registry=${instance}`, 'lessl.helper'] } })).length;

describe('removals that fail are retried until done', () => {
  let proxy: EngineProxy;
  let l: DockerBackend;
  beforeAll(async () => {
    proxy = await engineProxy();
    l = await unwrap(openDockerBackend({ socketPath: proxy.path }));
    await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
  });
  afterAll(async () => {
    await l.close();
    await purge(docker, l.instanceId);
    await proxy.close();
  });

  test('an image helper the engine would not remove is retried in the background, and never named a user', async () => {
    const child = `image://local/${n('child')}`;
    proxy.refuse = /^DELETE \/[^ ]*containers\//;
    proxy.mode = 'refusing';
    await unwrap(l.stores.image.create({ id: child, parent: BASE, data: await tarOf({ 'a.txt': 'a\n' }) }));
    expect(proxy.refused).toBeGreaterThan(0);
    expect(await helpers(l.instanceId)).toBe(1);
    // the helper holds the parent's Docker image; deleting the parent removes lessl's own helper first
    await unwrap(l.stores.image.delete(child));
    proxy.mode = 'pass';
    const del = await l.stores.image.delete(BASE)();
    expect(E.isRight(del) ? 'deleted' : del.left).toBe('deleted');
    expect(await helpers(l.instanceId)).toBe(0);
    await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
  });

  test('a volume helper the engine would not remove is gone once the engine answers again', async () => {
    const vol = `volume://local/${n('data')}`;
    proxy.refuse = /^DELETE \/[^ ]*containers\//;
    proxy.mode = 'refusing';
    await unwrap(l.stores.volume.create({ id: vol, data: await tarOf({ 'b.txt': 'b\n' }) }));
    expect(await helpers(l.instanceId)).toBe(1);
    proxy.mode = 'pass';
    // nobody touches it: the janitor's background retry removes it
    expect(await eventually(async () => (await helpers(l.instanceId)) === 0)).toBe(true);
    await unwrap(l.stores.volume.delete(vol));
  });

  test('a volume the engine would not remove after a failed create is retried: nothing is left', async () => {
    const vol = `volume://local/${n('bad')}`;
    proxy.refuse = /^DELETE \/[^ ]*volumes\//;
    proxy.mode = 'refusing';
    // data Docker cannot unpack fails the create after the Docker volume exists
    const r = await l.stores.volume.create({ id: vol, data: new Uint8Array(1024).fill(1) })();
    expect(E.isLeft(r)).toBe(true);
    proxy.mode = 'pass';
    const left = async (): Promise<number> =>
      ((await docker.listVolumes({ filters: { label: [`lessl.id=${vol}`] } })).Volumes ?? []).length;
    expect(await eventually(async () => (await left()) === 0)).toBe(true);
  });
});

describe('uploads to a frozen engine', () => {
  let proxy: EngineProxy;
  let l: DockerBackend;
  let saved: Buffer; // a docker save archive of BASE
  beforeAll(async () => {
    proxy = await engineProxy();
    l = await unwrap(openDockerBackend({ socketPath: proxy.path, callTimeoutMs: 1000 }));
    await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
    const parts: Buffer[] = [];
    for await (const c of (await unwrap(l.exportImage(BASE))) as AsyncIterable<Buffer>) parts.push(c);
    saved = Buffer.concat(parts);
  });
  afterAll(async () => {
    proxy.mode = 'pass';
    await l.close();
    await purge(docker, l.instanceId);
    await proxy.close();
  });

  test('an import or a load to an engine that stops answering (frozen) is Unavailable, and leaves nothing once it answers again', async () => {
    const images = async (): Promise<number> =>
      (await docker.listImages({ filters: { label: [`lessl.registry=${l.instanceId}`] } })).length;
    const before = await images();
    const uploads = {
      import: { data: await tarOf({ 'big.txt': 'x'.repeat(512 * 1024) }) },
      load: { data: saved, options: { source: { type: 'tarball' } } },
    };
    for (const [what, req] of Object.entries(uploads)) {
      const id = `image://local/${n(what)}`;
      proxy.mode = 'frozen';
      const r = await l.stores.image.create({ id, ...req })();
      proxy.mode = 'pass';
      expect(E.isLeft(r) ? r.left._tag : 'Right', what).toBe('Unavailable');
      expect(E.isLeft(await l.stores.image.read(id)())).toBe(true);
    }
    expect(await eventually(async () => (await images()) === before)).toBe(true);
  });
});

describe('recovery', () => {
  test('a labelled image Docker finishes after recovery ran is removed and reported', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-late-'));
    try {
      // a create interrupted by a crash leaves its write intent
      const id = `image://local/${n('late')}`;
      const reg = await Registry.open({ location });
      await reg.commit({ putIntent: [{ id, started: new Date().toISOString(), detail: { kind: 'image' } }] });
      const instance = reg.instanceId;
      await reg.close();
      const registry = await Registry.open({ location });
      const b = await unwrap(openDockerBackend({ registry }));
      try {
        expect(registry.pendingIntents()).toEqual([]);
        // ... and Docker finishes the import it was handed only now
        const repo = `lessl/late-${n('x')}`;
        const s = await docker.importImage(
          Buffer.from(await tarOf({ 'x.txt': 'x\n' })) as unknown as NodeJS.ReadableStream,
          {
            repo,
            tag: 'v',
            changes: [`LABEL lessl.id=${id}`, `LABEL lessl.registry=${instance}`],
          } as object,
        );
        await new Promise((res, rej) => docker.modem.followProgress(s, (err) => (err ? rej(err) : res(undefined))));
        const gone = await eventually(async () => (await docker.listImages({ filters: { reference: [repo] } })).length === 0);
        expect(gone).toBe(true);
        expect(b.reconciled.orphansRemoved.filter((r) => r.startsWith('image ') && r.endsWith(`(${repo}:v)`))).toHaveLength(1);
        expect(E.isLeft(await b.stores.image.read(id)())).toBe(true);
      } finally {
        await b.close();
        await purge(docker, instance);
      }
    } finally {
      rmSync(location, { recursive: true, force: true });
    }
  });

  test('an embedding process killed at many points of image and volume creates leaves nothing half-made', async () => {
    const location = mkdtempSync(join(tmpdir(), 'lessl-crash-'));
    const kinds = ['scratch image', 'image with a parent', 'fresh volume', 'volume with data', 'volume from a parent'];
    const delays = [0, 40, 90, 160, 260, 400];
    const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 12);
    let instance = '';
    let reported = 0;
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const kind = kinds[round % kinds.length] as string;
        const delay = delays[round % delays.length] as number;
        const child = spawn(process.execPath, [fixture('creates.mjs'), location, String(round)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        const exited = new Promise((r) => child.once('exit', r));
        await new Promise<void>((res, rej) => {
          let buf = '';
          child.stdout.on('data', (d: Buffer) => {
            buf += d.toString();
            instance = /instance (\S+)/.exec(buf)?.[1] ?? instance;
            if (buf.includes(`begin 1 ${kind}\n`)) res();
          });
          child.once('exit', (code) => rej(new Error(`the embedding process exited early (${code})`)));
        });
        await new Promise((r) => setTimeout(r, delay));
        child.kill('SIGKILL');
        await exited;

        // Docker finishes what the dead process asked for (a helper's removal, an import) on its own;
        // what is there a moment later is what the next open must deal with
        await new Promise((r) => setTimeout(r, 1000));
        const before = await labelled(instance);
        const registry = await Registry.open({ location });
        const b = await unwrap(openDockerBackend({ registry }));
        try {
          expect(registry.pendingIntents()).toEqual([]);
          const ok = await eventually(async () => (await halfMade(b, registry)).length === 0);
          expect(ok ? [] : await halfMade(b, registry), `round ${round}: killed ${delay} ms into a ${kind}`).toEqual([]);
          const after = new Set(await labelled(instance));
          const report = [...b.reconciled.recovered, ...b.reconciled.orphansRemoved];
          reported += report.length;
          const unreported = before.filter((o) => !after.has(o) && !report.some((r) => r.includes(o)));
          expect(unreported, `round ${round}: removed but not reported`).toEqual([]);
        } finally {
          await b.close();
        }
      }
      console.log(`crash test: ${ROUNDS} kills during creates, ${reported} half-made objects removed and reported`);
    } finally {
      if (instance !== '') await purge(docker, instance);
      rmSync(location, { recursive: true, force: true });
    }
  });
});

/** The labelled Docker objects of a registry: container names, image IDs, volume names (as `reconciled` names them). */
const labelled = async (instance: string): Promise<string[]> => {
  const f = { label: [`lessl.registry=${instance}`] };
  return [
    ...(await docker.listContainers({ all: true, filters: f })).map((c) => c.Names[0] ?? c.Id),
    ...(await docker.listImages({ filters: f })).map((i) => i.Id),
    ...((await docker.listVolumes({ filters: f })).Volumes ?? []).map((v) => v.Name),
  ];
};

/**
 * What is half-made: labelled Docker objects whose element has no record, helper containers,
 * and records whose Docker object does not exist.
 */
const halfMade = async (b: DockerBackend, registry: RegistryReads): Promise<string[]> => {
  const f = { label: [`lessl.registry=${b.instanceId}`] };
  const out: string[] = [];
  for (const c of await docker.listContainers({ all: true, filters: f })) out.push(`container ${c.Names[0] ?? c.Id}`);
  for (const i of await docker.listImages({ filters: f }))
    if (registry.get(String(i.Labels?.['lessl.id'])) === undefined) out.push(`image ${i.RepoTags?.[0] ?? i.Id}`);
  for (const v of (await docker.listVolumes({ filters: f })).Volumes ?? [])
    if (registry.get(String(v.Labels?.['lessl.id'])) === undefined) out.push(`volume ${v.Name}`);
  for (const el of registry.all()) {
    const ok =
      el.id.kind === 'image'
        ? await docker
            .getImage(String(el.attributes.imageId))
            .inspect()
            .then(() => true)
            .catch(() => false)
        : el.id.kind === 'volume'
          ? await docker
              .getVolume(String(el.attributes.volumeName))
              .inspect()
              .then(() => true)
              .catch(() => false)
          : true;
    if (!ok) out.push(`record ${el.id.key}`);
  }
  return out;
};
