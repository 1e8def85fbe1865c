/**
 * Store policy on commits: the executor store's policy is honoured like
 * any store's. Read-only is in the conformance suite; create-only is here (its executors cannot
 * be deleted, which a Docker run would leave behind).
 */
import * as E from 'fp-ts/lib/Either.js';
import { expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { DEFAULT_STORES, openMemoryBackend } from '@lessl/memory';

test('a create-only executor store takes the commit that creates an executor and refuses later ones', async () => {
  const l = await unwrap(
    openMemoryBackend({ stores: [...DEFAULT_STORES, { kind: 'executor', name: 'co', policy: 'create-only' }] }),
  );
  await unwrap(l.stores.image.create({ id: 'image://local/base' }));
  const h = await unwrap(l.composer.join(await unwrap(l.composer.handle('executor://co/x')), 'image://local/base'));
  const first = await unwrap(l.composer.commit(h));
  expect(first.committed).toBe(true);
  if (!first.committed) return;
  const again = await l.composer.commit(await unwrap(l.composer.leave(first.handle, 'image://local/base')))();
  expect(E.isLeft(again) && again.left).toMatchObject({ _tag: 'InvalidLocation', policy: 'create-only', operation: 'compose' });
  expect((await unwrap(l.stores.executor.read('executor://co/x'))).revision).toBe(1);
  await l.close();
});
