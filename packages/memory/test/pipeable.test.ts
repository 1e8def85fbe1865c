import { pipe } from 'fp-ts/lib/function.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import * as E from 'fp-ts/lib/Either.js';
import { expect, test } from 'vitest';
import { composeWith, text, unwrap } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';

test('data-last composer functions read as a pipeline, and stop at the first error', async () => {
  const lessl = await unwrap(openMemoryBackend());
  await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: new Uint8Array(8) }));
  await unwrap(lessl.stores.task.create({ id: 'task://local/hello', spec: { cmd: ['echo', 'piped'] } }));
  const c = composeWith(lessl.composer);
  const started = await pipe(
    lessl.composer.handle('executor://local/web'),
    TE.chain(c.join('image://local/base')),
    TE.chain(c.join('task://local/hello')),
    TE.chain(c.bind('task://local/hello')),
    TE.chain(c.commit()),
  )();
  expect(E.isRight(started) && started.right.committed).toBe(true);
  expect(text((await unwrap(lessl.tasks.wait('task://local/hello'))).stdout)).toBe('piped\n');
  const failed = await pipe(
    lessl.composer.handle('executor://local/other'),
    TE.chain(c.join('image://local/missing')),
    TE.chain(c.commit()),
  )();
  expect(E.isLeft(failed) && failed.left._tag).toBe('NotFound');
  await lessl.close();
});
