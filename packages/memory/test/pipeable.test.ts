import { pipe } from 'fp-ts/lib/function.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import * as E from 'fp-ts/lib/Either.js';
import { expect, test } from 'vitest';
import { composeWith, LesslCommitError, promise, runtimeError, text, unwrap } from '@lessl/core';
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

test('through the Promise façade a rolled-back commit rejects (one error channel), with every step result', async () => {
  const lessl = await unwrap(
    openMemoryBackend({ faults: (s) => (s.op === 'bind' ? runtimeError(s.id, 'injected') : undefined) }),
  );
  await unwrap(lessl.stores.image.create({ id: 'image://local/base', data: new Uint8Array(8) }));
  await unwrap(lessl.stores.task.create({ id: 'task://local/t', spec: { cmd: ['true'] } }));
  const c = promise(lessl.composer);
  const h = await c.bind(
    await c.join(await c.join(await c.handle('executor://local/x'), 'image://local/base'), 'task://local/t'),
  );
  const err = await c.commit(h).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(LesslCommitError);
  expect(err instanceof LesslCommitError && [err.tag, err.results.length > 0]).toEqual(['RuntimeError', true]);
  await lessl.close();
});
