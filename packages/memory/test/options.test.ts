import * as E from 'fp-ts/lib/Either.js';
import { expect, test } from 'vitest';
import { openMemoryBackend, tinyShell } from '@lessl/memory';

test('openMemoryBackend refuses unknown or mistyped options with InvalidEntry naming them', async () => {
  for (const [opts, key] of [
    [{ outputbytes: 10 }, 'outputbytes'],
    [{ outputBytes: 0 }, 'outputBytes'],
    [{ run: 'sh' }, 'run'],
    [{ stores: [{ kind: 'image', name: 'local', polcy: 'read-only' }] }, 'stores.polcy'],
    [{ registry: { memory: true, loc: '/tmp' } }, 'registry.loc'],
    [{ credentials: {} }, 'credentials'],
  ] as const) {
    const r = await openMemoryBackend(opts as never)();
    expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual([key]);
  }
  expect(E.isLeft(await openMemoryBackend(null as never)())).toBe(true);
  const ok = await openMemoryBackend({ run: tinyShell, outputBytes: 10, credentials: async () => ({}) })();
  expect(E.isRight(ok)).toBe(true);
  if (E.isRight(ok)) await ok.right.close();
});
