import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { expect, test } from 'vitest';
import { Level } from 'level';
import { unwrap } from '@lessl/core';
import type { StringLevel } from '@lessl/level';
import { openMemoryBackend } from '@lessl/memory';

/**
 * A real classic-level database that records the options of every batch it is asked to write
 * (what reaches LevelDB: `sync` is its fsync). A power cut cannot be simulated here, so the test
 * checks that the fsync is asked for.
 */
const recordingLevel = (): { db: StringLevel; syncs: (boolean | undefined)[] } => {
  const db = new Level<string, string>(mkdtempSync(join(tmpdir(), 'lessl-dur-')), { valueEncoding: 'utf8' });
  const syncs: (boolean | undefined)[] = [];
  const batch = db._batch.bind(db);
  db._batch = (ops, options) => {
    syncs.push((options as { sync?: boolean }).sync);
    return batch(ops, options);
  };
  return { db: db as unknown as StringLevel, syncs };
};

test('durability is decoded exactly: an unknown value is InvalidEntry naming it', async () => {
  for (const bad of ['Disk', 'fsync', true, 1]) {
    const r = await openMemoryBackend({ durability: bad as never })();
    expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual(['durability']);
  }
  for (const ok of ['process', 'disk'] as const) {
    const r = await openMemoryBackend({ durability: ok })();
    expect(E.isRight(r)).toBe(true);
    if (E.isRight(r)) await r.right.close();
  }
});

test("durability 'disk' writes every registry batch with sync (fsync); 'process' and the default without", async () => {
  for (const [durability, want] of [
    ['disk', true],
    ['process', false],
    [undefined, false],
  ] as const) {
    const { db, syncs } = recordingLevel();
    const lessl = await unwrap(openMemoryBackend({ registry: { db }, ...(durability === undefined ? {} : { durability }) }));
    await unwrap(lessl.stores.task.create({ id: 'task://local/t', spec: { cmd: ['echo', 'hi'] } }));
    await unwrap(lessl.stores.task.delete('task://local/t'));
    await lessl.close();
    expect(syncs.length).toBeGreaterThanOrEqual(2);
    expect(syncs.every((s) => s === want)).toBe(true);
  }
});
