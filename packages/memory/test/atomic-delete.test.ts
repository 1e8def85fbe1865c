/**
 * Issue 15, item 4: a delete whose registry write fails must leave the old state or the new one,
 * never a record without its data. The memory backend keeps data in a `MemoryData` shared
 * between opens and its registry on disk, so a reopen shows what a failure left.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { Level } from 'level';
import { describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { Registry, type StringLevel } from '@lessl/level';
import { contentOf, MemoryData, openMemoryBackend } from '@lessl/memory';

const IMAGE = 'image://local/kept';
const VOLUME = 'volume://local/kept';
const BYTES = new Uint8Array([1, 2, 3, 4]);
/** The bytes kept for `id`, as a plain array (the backend keeps a Buffer). */
const held = (data: MemoryData, id: string): number[] | undefined => {
  const b = contentOf(data, id);
  return b === undefined ? undefined : [...b];
};

/** A fresh on-disk location with an image and a volume holding `BYTES`, and the data they share. */
const seeded = async (): Promise<{ location: string; data: MemoryData }> => {
  const location = mkdtempSync(join(tmpdir(), 'lessl-delete-'));
  const data = new MemoryData();
  const l = await unwrap(openMemoryBackend({ registry: { location }, data }));
  await unwrap(l.stores.image.create({ id: IMAGE, data: BYTES }));
  await unwrap(l.stores.volume.create({ id: VOLUME, data: BYTES }));
  await l.close();
  return { location, data };
};

/** A classic-level database whose batches fail once `failing(ops)` says so. */
const faultyDb = (location: string, failing: (keys: readonly string[]) => boolean): StringLevel => {
  const db = new Level<string, string>(location, { valueEncoding: 'utf8' }) as unknown as StringLevel;
  const batch = db.batch.bind(db) as (ops: { key: string }[]) => Promise<void>;
  Object.assign(db, {
    batch: async (ops: { key: string }[]) => {
      if (failing(ops.map((o) => o.key))) throw new Error('injected write failure');
      return batch(ops);
    },
  });
  return db;
};

describe('a delete whose registry write fails (memory backend, on-disk registry)', () => {
  test('after the registry is closed: RuntimeError, and after reopen the element and its data are intact', async () => {
    const { location, data } = await seeded();
    const registry = await Registry.open({ location });
    const l = await unwrap(openMemoryBackend({ registry, data }));
    await registry.close();
    for (const id of [IMAGE, VOLUME]) {
      const r = await (id === IMAGE ? l.stores.image : l.stores.volume).delete(id)();
      expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
      expect(held(data, id)).toEqual([...BYTES]);
    }
    await l.close().catch(() => undefined);
    const again = await unwrap(openMemoryBackend({ registry: { location }, data }));
    try {
      expect((await unwrap(again.stores.image.read(IMAGE))).revision).toBe(1);
      expect((await unwrap(again.stores.volume.read(VOLUME))).revision).toBe(1);
      expect(held(data, IMAGE)).toEqual([...BYTES]);
      expect(held(data, VOLUME)).toEqual([...BYTES]);
      // and the delete works once the registry does
      await unwrap(again.stores.image.delete(IMAGE));
      expect(contentOf(data, IMAGE)).toBeUndefined();
    } finally {
      await again.close();
    }
  });

  test('when the write that removes the record fails: RuntimeError, and the reopen finishes the delete (record, data, event)', async () => {
    const { location, data } = await seeded();
    const db = faultyDb(location, (keys) => keys.includes(`e!${VOLUME}`));
    const l = await unwrap(openMemoryBackend({ registry: await Registry.open({ db }), data }));
    const r = await l.stores.volume.delete(VOLUME)();
    expect(E.isLeft(r) && r.left._tag).toBe('RuntimeError');
    await l.close();
    const again = await unwrap(openMemoryBackend({ registry: { location }, data }));
    try {
      const gone = await again.stores.volume.read(VOLUME)();
      expect(E.isLeft(gone) && gone.left._tag).toBe('NotFound');
      expect(contentOf(data, VOLUME)).toBeUndefined();
      const types: string[] = [];
      for await (const e of again.events.stream({ ids: [VOLUME] }, { since: 0 })) {
        types.push(e.type);
        if (types.length === 2) break;
      }
      expect(types).toEqual(['created', 'deleted']);
      // the image was not touched
      expect(held(data, IMAGE)).toEqual([...BYTES]);
    } finally {
      await again.close();
    }
  });

  test('when the reopen cannot finish the delete either: the open answers RuntimeError (no rejection), and a later one finishes it', async () => {
    const { location, data } = await seeded();
    const failing = (keys: readonly string[]): boolean => keys.includes(`e!${VOLUME}`);
    const l = await unwrap(openMemoryBackend({ registry: await Registry.open({ db: faultyDb(location, failing) }), data }));
    expect(E.isLeft(await l.stores.volume.delete(VOLUME)())).toBe(true);
    await l.close();
    const refused = await openMemoryBackend({ registry: await Registry.open({ db: faultyDb(location, failing) }), data })();
    expect(E.isLeft(refused) && refused.left._tag).toBe('RuntimeError');
    const again = await unwrap(openMemoryBackend({ registry: { location }, data }));
    try {
      const gone = await again.stores.volume.read(VOLUME)();
      expect(E.isLeft(gone) && gone.left._tag).toBe('NotFound');
    } finally {
      await again.close();
    }
  });
});
