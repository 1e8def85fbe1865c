/**
 * Issue 7's report, reproduced on the memory backend: a value that cannot be serialised in an
 * executor's backend options (or a task spec's unknown field, create options, a forged handle)
 * used to be accepted, then fail inside the registry's writer: the call never settled, every
 * later write hung and `close()` hung. Now the call answers InvalidEntry and nothing else moves.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { describe, expect, test } from 'vitest';
import { within } from '@lessl/conformance';
import { unwrap, type AnyError, type ExecutorOptions, type Handle } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';

const tagOf = async <A>(te: TaskEither<AnyError, A>, what: string): Promise<string> => {
  const r = await within(te(), what);
  return E.isLeft(r) ? r.left._tag : 'Right';
};

const cycle: Record<string, unknown> = {};
cycle.self = cycle;
const revoked = Proxy.revocable({}, {});
revoked.revoke();
const HOSTILE: Record<string, () => unknown> = {
  BigInt: () => 10n,
  cycle: () => cycle,
  'throwing getter': () =>
    Object.defineProperty({}, 'x', {
      enumerable: true,
      get: () => {
        throw new Error('boom');
      },
    }),
  Proxy: () =>
    new Proxy(
      { a: 1 },
      {
        get: () => {
          throw new Error('trap');
        },
      },
    ),
  'revoked Proxy': () => revoked.proxy,
};

describe('no caller value wedges the registry (memory backend)', () => {
  for (const [what, value] of Object.entries(HOSTILE))
    test(`${what}: InvalidEntry wherever a caller can put it; later writes and close() work`, async () => {
      const l = await unwrap(openMemoryBackend());
      await unwrap(l.stores.image.create({ id: 'image://local/base' }));
      const options = { backend: { v: value() } } as ExecutorOptions;
      // an executor's backend options: at handle, and in a handle forged around handle()
      expect(await tagOf(l.composer.handle('executor://local/x', options), 'handle')).toBe('InvalidEntry');
      const h = await unwrap(l.composer.handle('executor://local/x'));
      const forged: Handle = { ...h, options };
      expect(await tagOf(l.composer.commit(forged), 'commit of a forged handle')).toBe('InvalidEntry');
      expect(await tagOf(l.composer.join(forged, 'image://local/base'), 'join to a forged handle')).toBe('InvalidEntry');
      const badMember = { ...h, members: [{ id: { key: 'image://local/base' }, readOnly: value(), state: 'bound' }] };
      expect(await tagOf(l.composer.commit(badMember as unknown as Handle), 'commit of a forged member')).toBe('InvalidEntry');
      // a task spec's unknown field, and create options
      const spec = { cmd: ['true'], extra: value() };
      expect(await tagOf(l.stores.task.create({ id: 'task://local/t', spec }), 'task create')).toBe('InvalidEntry');
      const opts = { v: value() };
      expect(await tagOf(l.stores.image.create({ id: 'image://local/i', options: opts }), 'image create')).toBe('InvalidEntry');
      // nothing was written, and everything still works
      expect(await tagOf(l.stores.executor.read('executor://local/x'), 'read')).toBe('NotFound');
      const ok = await within(l.run({ image: 'image://local/base', spec: { cmd: ['echo', 'hi'] } })(), 'a later run');
      expect(E.isRight(ok) && new TextDecoder().decode(ok.right.stdout)).toBe('hi\n');
      await within(l.close(), 'close()');
    });
});
