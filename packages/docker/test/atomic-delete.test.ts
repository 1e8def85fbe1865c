/**
 * Issue 15, item 4, on Docker: a delete whose registry write fails leaves the old state (the
 * record and its Docker object) or, once reopened, the new one (neither), never a record whose
 * Docker image or volume is gone. A commit whose registry write fails keeps the container the
 * record names.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, describe, expect, test } from 'vitest';
import { unwrap, type Element } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { faultyDb, n, startDaemon, tarOf } from './support.js';

const docker = new Docker();
const instances: string[] = [];

afterAll(async () => {
  for (const i of instances) await purge(docker, i);
});

/** Whether the Docker object of an image or volume element exists. */
const inDocker = async (el: Element): Promise<boolean> => {
  const probe =
    el.id.kind === 'image'
      ? docker.getImage(String(el.attributes.ref)).inspect()
      : docker.getVolume(String(el.attributes.volumeName)).inspect();
  return probe.then(
    () => true,
    () => false,
  );
};

/** A registry at a fresh location holding an image and a volume with data. */
const seeded = async (): Promise<{ location: string; image: Element; volume: Element }> => {
  const location = mkdtempSync(join(tmpdir(), 'lessl-delete-'));
  const l = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
  instances.push(l.instanceId);
  try {
    const image = await unwrap(l.stores.image.create({ id: `image://local/${n('img')}`, data: await busyboxRootfsBytes() }));
    const volume = await unwrap(
      l.stores.volume.create({ id: `volume://local/${n('vol')}`, data: await tarOf({ 'kept.txt': 'kept\n' }) }),
    );
    return { location, image, volume };
  } finally {
    await l.close();
  }
};

describe('a delete whose registry write fails (Docker)', () => {
  test('after the registry is closed: RuntimeError, and after reopen the elements and their Docker objects are intact', async () => {
    const { location, image, volume } = await seeded();
    const registry = await Registry.open({ location });
    const l = await unwrap(openDockerBackend({ registry, watch: false }));
    await registry.close();
    for (const el of [image, volume]) {
      const r = await l.stores[el.id.kind].delete(el.id)();
      expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
      expect(await inDocker(el)).toBe(true);
    }
    await l.close().catch(() => undefined);
    const again = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    try {
      for (const el of [image, volume]) {
        const now = await unwrap(again.stores[el.id.kind].read(el.id));
        expect(now.revision).toBe(el.revision);
        expect(await inDocker(now)).toBe(true);
      }
      expect(again.reconciled.vanished).toEqual([]);
    } finally {
      await again.close();
    }
  });

  test('when the write that removes the record fails: RuntimeError, and the reopen finishes the delete', async () => {
    const { location, image, volume } = await seeded();
    const db = faultyDb(location, (keys) => keys.includes(`e!${volume.id.key}`));
    const l = await unwrap(openDockerBackend({ registry: await Registry.open({ db }), watch: false }));
    const r = await l.stores.volume.delete(volume.id)();
    expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
    await l.close();
    const again = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    try {
      const gone = await again.stores.volume.read(volume.id)();
      expect(E.isLeft(gone) && gone.left._tag).toBe('NotFound');
      expect(await inDocker(volume)).toBe(false);
      const types: string[] = [];
      for await (const e of again.events.stream({ ids: [volume.id] }, { since: 0 })) {
        types.push(e.type);
        if (types.length === 2) break;
      }
      expect(types).toEqual(['created', 'deleted']);
      expect(await inDocker(await unwrap(again.stores.image.read(image.id)))).toBe(true);
    } finally {
      await again.close();
    }
  });

  test('a commit whose registry write fails keeps the container the record names (unbind of a running main task)', async () => {
    const { location, image } = await seeded();
    let armed = false;
    const db = faultyDb(location, (keys) => armed && keys.some((k) => k.startsWith('x!')));
    const l = await unwrap(openDockerBackend({ registry: await Registry.open({ db }), watch: false }));
    try {
      const { x, task, containerId } = await startDaemon(l, image.id.key);
      armed = true;
      const failed = await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x)), task))));
      expect(failed.committed).toBe(false);
      expect(!failed.committed && failed.error._tag).toBe('RuntimeError');
      // the task was stopped (that cannot be undone), but its container, which the record still names, is there
      expect((await unwrap(l.stores.executor.read(x))).attributes.containerId).toBe(containerId);
      const kept = await docker
        .getContainer(containerId)
        .inspect()
        .catch(() => undefined);
      expect(kept?.Id).toBe(containerId);
      armed = false;
      const done = await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x)), task))));
      expect(done.committed).toBe(true);
      // the executor's delete removes it
      await unwrap(l.stores.executor.delete(x));
      const gone = await docker
        .getContainer(containerId)
        .inspect()
        .then(
          () => false,
          () => true,
        );
      expect(gone).toBe(true);
    } finally {
      await l.close();
    }
  });
});
