/**
 * Exact options: every options object and call context of every public call is
 * decoded exactly. A misspelt key (`ifRevison`, `readonly`, `principle`) or a value of the wrong
 * type is `InvalidEntry` naming it, and the call has no effect: nothing is created, changed,
 * started or published.
 */
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { isLesslError, LesslError, runtimeError, showValue, type AnyError, type Handle } from '@lessl/core';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { assert, b, fails, ok, s, uniq } from './harness.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

/** What the option cases work on: a task, a volume, an open handle on a new executor. */
interface Scene {
  readonly task: string;
  readonly volume: string;
  readonly executor: string;
  readonly handle: Handle;
}

const scene = async (l: TestBackend, spec: unknown): Promise<Scene> => {
  const task = `task://local/${uniq('opt')}`;
  const volume = `volume://local/${uniq('opt')}`;
  const executor = `executor://local/${uniq('opt')}`;
  await ok(l.stores.task.create({ id: task, spec, rw: { stage: b('draft') } }));
  await ok(l.stores.volume.create({ id: volume }));
  const h0 = await ok(l.composer.handle(executor));
  const handle = await ok(l.composer.join(h0, task));
  return { task, volume, executor, handle };
};

/** An object with one own key `key` (even `__proto__`) set to `value`, on top of `base`. */
const withKey = (base: Readonly<Record<string, unknown>>, key: string, value: unknown): Record<string, unknown> => {
  const o: Record<string, unknown> = { ...base };
  Object.defineProperty(o, key, { value, enumerable: true, writable: true, configurable: true });
  return o;
};

/** One call that takes an options object: `call(opts)` makes it with `opts` as that object. */
interface OptionCall {
  readonly name: string;
  /** The keys the object takes. */
  readonly known: readonly string[];
  /** Valid fields the object is given besides the unknown one. */
  readonly base: Readonly<Record<string, unknown>>;
  readonly call: (l: TestBackend, sc: Scene, opts: Record<string, unknown>) => TaskEither<AnyError, unknown>;
}

/** An async iterable's first `next()` as a TaskEither (its rejection a Left). */
const firstOf =
  (it: AsyncIterable<unknown>): TaskEither<AnyError, unknown> =>
  async () => {
    try {
      return E.right(await it[Symbol.asyncIterator]().next());
    } catch (e) {
      return E.left(e instanceof LesslError ? e.error : runtimeError('', `rejected with ${showValue(e)}, not a LesslError`));
    }
  };

const CTX = ['principal', 'signal', 'onProgress'];

const calls = (spec: unknown): readonly OptionCall[] => [
  {
    name: 'stores.create request',
    known: ['id', 'parent', 'data', 'checksum', 'ro', 'rw', 'spec', 'options'],
    base: { spec },
    call: (l, _sc, o) => l.stores.task.create(illTyped({ id: `task://local/${uniq('opt')}`, ...o })),
  },
  {
    name: 'stores.create context',
    known: CTX,
    base: {},
    call: (l, _sc, o) => l.stores.task.create({ id: `task://local/${uniq('opt')}`, spec }, o),
  },
  { name: 'stores.read context', known: CTX, base: {}, call: (l, sc, o) => l.stores.task.read(sc.task, undefined, o) },
  {
    name: 'stores.update options',
    known: ['ifRevision'],
    base: { ifRevision: 1 },
    call: (l, sc, o) => l.stores.task.update(sc.task, { stage: b('ready') }, o),
  },
  {
    name: 'stores.update context',
    known: CTX,
    base: {},
    call: (l, sc, o) => l.stores.task.update(sc.task, { stage: b('ready') }, undefined, o),
  },
  { name: 'stores.delete context', known: CTX, base: {}, call: (l, sc, o) => l.stores.task.delete(sc.task, o) },
  { name: 'stores.list context', known: CTX, base: {}, call: (l, _sc, o) => l.stores.task.list(undefined, o) },
  {
    name: 'composer.handle context',
    known: CTX,
    base: {},
    call: (l, _sc, o) => l.composer.handle(`executor://local/${uniq('opt')}`, undefined, o),
  },
  {
    name: 'composer.join options',
    known: ['mountpoint', 'readOnly'],
    base: { mountpoint: '/data' },
    call: (l, sc, o) => l.composer.join(sc.handle, sc.volume, o),
  },
  {
    name: 'composer.join context',
    known: CTX,
    base: {},
    call: (l, sc, o) => l.composer.join(sc.handle, sc.volume, { mountpoint: '/d' }, o),
  },
  { name: 'composer.bind context', known: CTX, base: {}, call: (l, sc, o) => l.composer.bind(sc.handle, sc.task, o) },
  { name: 'composer.unbind context', known: CTX, base: {}, call: (l, sc, o) => l.composer.unbind(sc.handle, sc.task, o) },
  { name: 'composer.leave context', known: CTX, base: {}, call: (l, sc, o) => l.composer.leave(sc.handle, sc.task, o) },
  { name: 'composer.commit context', known: CTX, base: {}, call: (l, sc, o) => l.composer.commit(sc.handle, o) },
  { name: 'tasks.status context', known: CTX, base: {}, call: (l, sc, o) => l.tasks.status(sc.task, o) },
  { name: 'tasks.wait options', known: CTX, base: {}, call: (l, sc, o) => l.tasks.wait(sc.task, o) },
  {
    name: 'tasks.logs options',
    known: [...CTX, 'follow', 'since'],
    base: { since: 0 },
    call: (l, sc, o) => firstOf(l.tasks.logs(sc.task, o)),
  },
  {
    name: 'tasks.kill options',
    known: ['principal', 'onProgress', 'signal', 'graceMs'],
    base: { signal: 'KILL' },
    call: (l, sc, o) => l.tasks.kill(sc.task, o),
  },
  {
    name: 'run request',
    known: [...CTX, 'image', 'volumes', 'spec', 'options', 'keep'],
    base: { image: 'image://local/none', spec },
    call: (l, _sc, o) => l.run(illTyped(o)),
  },
  {
    name: 'run volume',
    known: ['id', 'mountpoint', 'readOnly'],
    base: { mountpoint: '/data' },
    call: (l, sc, o) => l.run({ image: 'image://local/none', spec, volumes: [illTyped({ id: sc.volume, ...o })] }),
  },
  {
    name: 'events.stream options',
    known: ['since', 'signal', 'highWaterMark', 'overflow'],
    base: { since: 0 },
    call: (l, _sc, o) => firstOf(l.events.stream({}, o)),
  },
];

/** The call refused `opts` with InvalidEntry naming `key`, and nothing happened. */
const refused = async (l: TestBackend, sc: Scene, c: OptionCall, opts: Record<string, unknown>, key: string): Promise<void> => {
  const seq = l.events.lastSeq();
  const tasks = (await ok(l.stores.task.list())).length;
  const r = await c.call(l, sc, opts)();
  assert.ok(E.isLeft(r), `${c.name}: ${JSON.stringify(key)} was accepted`);
  assert.ok(isLesslError(r.left), `${c.name}: not a lessl error`);
  assert.equal(r.left._tag, 'InvalidEntry', `${c.name}: ${r.left._tag}: ${r.left.message}`);
  const keys = r.left._tag === 'InvalidEntry' ? r.left.keys : [];
  assert.ok(
    keys.some((k) => k === key || k.endsWith(`.${key}`)),
    `${c.name}: the error names ${JSON.stringify(keys)}, not ${JSON.stringify(key)}`,
  );
  assert.equal(l.events.lastSeq(), seq, `${c.name}: an event was published`);
  assert.equal((await ok(l.stores.task.list())).length, tasks, `${c.name}: a task was created or removed`);
  const el = await ok(l.stores.task.read(sc.task));
  assert.equal(el.revision, 1, `${c.name}: the task changed`);
};

/** Keys that are none of a call's own (fast-check's strings, names of Object.prototype members, near misses). */
const unknownKey = (known: readonly string[]): fc.Arbitrary<string> =>
  fc
    .oneof(
      fc.string({ minLength: 1, maxLength: 12 }),
      fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'readonly', 'ifRevison', 'principle'),
      fc.constantFrom(...known).map((k) => `${k}s`),
      fc.constantFrom(...known).map((k) => k.toLowerCase() + '_'),
    )
    .filter((k) => !known.includes(k));

export const optionCases = (o: SuiteOptions): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const runs = Math.max(20, o.propertyRuns ?? 40);
  return [
    {
      name: "options: the issue's typos are InvalidEntry naming them, with no effect (update ifRevison, join readonly, stream, tasks, run)",
      fn: async (l) => {
        const sc = await scene(l, spec);
        const e = await fails(l.stores.task.update(sc.task, { stage: b('x') }, illTyped({ ifRevison: 999 })), 'InvalidEntry');
        assert.deepEqual(e.keys, ['ifRevison']);
        const el = await ok(l.stores.task.read(sc.task));
        assert.equal(el.revision, 1);
        assert.equal(s(el.rw.stage), 'draft');
        const j = await fails(
          l.composer.join(sc.handle, sc.volume, illTyped({ mountpoint: '/data', readonly: true })),
          'InvalidEntry',
        );
        assert.deepEqual(j.keys, ['readonly']);
        const joined = await ok(l.composer.join(sc.handle, sc.volume, { mountpoint: '/data', readOnly: true }));
        assert.equal(joined.members.find((m) => m.id.key === sc.volume)?.readOnly, true);
        await fails(l.stores.task.update(sc.task, { stage: b('x') }, illTyped({ ifRevision: '1' })), 'InvalidEntry');
        await fails(l.stores.task.delete(sc.task, illTyped({ principle: 'mallory' })), 'InvalidEntry');
        await ok(l.stores.task.read(sc.task));
        const rv = await fails(
          l.run({ image: 'image://local/none', spec, volumes: [illTyped({ id: sc.volume, mountpoint: '/d', readonly: true })] }),
          'InvalidEntry',
        );
        assert.deepEqual(rv.keys, ['volumes[0].readonly']);
        await fails(l.run(illTyped({ image: 'image://local/none', spec, kepp: true })), 'InvalidEntry');
        await fails(l.tasks.kill(sc.task, illTyped({ signal: 'KILL', grace: 0 })), 'InvalidEntry');
        await fails(l.tasks.wait(sc.task, illTyped({ timeout: 5 })), 'InvalidEntry');
        await fails(firstOf(l.tasks.logs(sc.task, illTyped({ folow: true }))), 'InvalidEntry');
        await fails(firstOf(l.events.stream({}, illTyped({ sinse: 0 }))), 'InvalidEntry');
        await fails(l.composer.commit(sc.handle, illTyped({ signl: AbortSignal.abort() })), 'InvalidEntry');
        await fails(l.stores.executor.read(sc.executor), 'NotFound');
      },
    },
    {
      name: 'options: every options object and call context refuses a misspelt key (InvalidEntry naming it, no effect)',
      fn: async (l) => {
        const sc = await scene(l, spec);
        for (const c of calls(spec)) {
          const typo = c.known.includes('principal') ? 'principle' : `${c.known[0] ?? 'x'}x`;
          await refused(l, sc, c, withKey(c.base, typo, 'x'), typo);
        }
      },
    },
    {
      name: 'options: property: a random unknown key in any options object is InvalidEntry naming it, with no effect',
      timeout: 120_000,
      fn: async (l) => {
        const sc = await scene(l, spec);
        const all = calls(spec);
        const arb = fc
          .constantFrom(...all)
          .chain((c) => fc.tuple(fc.constant(c), unknownKey(c.known), fc.oneof(fc.constant(true), fc.integer(), fc.string())));
        await fc.assert(
          fc.asyncProperty(arb, async ([c, key, value]) => refused(l, sc, c, withKey(c.base, key, value), key)),
          { numRuns: runs, endOnFailure: true },
        );
      },
    },
  ];
};
