/**
 * The probe of the hostile-input cases: makes each hostile call and checks the property after
 * it. The call answered a typed lessl error or a result (no synchronous throw, no rejection with
 * anything but a `LesslError`, settled within a bound), nothing escaped (no unhandled rejection or
 * uncaught exception), a later write still works (the registry is not wedged) and a subscriber
 * installed beforehand saw that write's events.
 */
import { types } from 'node:util';
import * as E from 'fp-ts/lib/Either.js';
import { isLesslError, LesslError, showValue, type LesslEvent } from '@lessl/core';
import { assert, uniq } from './harness.js';
import type { TestBackend } from './types.js';

const TIMEOUT = Symbol('timeout');

/** `p`, or `TIMEOUT` once `ms` passed. */
const within = async <A>(p: PromiseLike<A>, ms: number): Promise<A | typeof TIMEOUT> => {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<typeof TIMEOUT>((res) => (timer = setTimeout(() => res(TIMEOUT), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
};

type Outcome = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: unknown };

/** How `p` settles, as a value; handled at once, so a rejection is never unhandled while a check waits. */
const outcomeOf = (p: unknown): Promise<Outcome> =>
  Promise.resolve(p).then(
    (value: unknown) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );

/** A rejection with anything but a `LesslError` fails the property. */
const typedRejection =
  (name: string) =>
  (e: unknown): string | undefined =>
    e instanceof LesslError ? undefined : `${name} rejected with ${showValue(e)}, not a LesslError`;

/** Lets pending rejections surface as `unhandledRejection` before the next check. */
const tick = (): Promise<void> => new Promise((res) => setImmediate(res));

/** True for a function (what a TaskEither and an Unsubscribe are). */
const isThunk = (u: unknown): u is () => unknown => typeof u === 'function';

/** True for an fp-ts Either: `{ _tag: 'Left' | 'Right' }`. */
const isEither = (u: unknown): u is E.Either<unknown, unknown> =>
  typeof u === 'object' && u !== null && '_tag' in u && (u._tag === 'Left' || u._tag === 'Right');

/** `u[Symbol.asyncIterator]()`; a TypeError when `u` is not an async iterable. */
const asyncIteratorOf = (u: unknown): AsyncIterator<unknown> => {
  const isIterable = (v: unknown): v is AsyncIterable<unknown> =>
    typeof v === 'object' && v !== null && Symbol.asyncIterator in v && typeof v[Symbol.asyncIterator] === 'function';
  if (!isIterable(u)) throw new TypeError('not an async iterable');
  return u[Symbol.asyncIterator]();
};

/** Calls `u.close()` when `u` has one (the streams of `events.stream`). */
const closeIfClosable = (u: unknown): void => {
  if (typeof u === 'object' && u !== null && 'close' in u && typeof u.close === 'function') u.close();
};

/**
 * Makes the calls and checks the property after each one. `install()` adds the process
 * listeners and the sentinel subscriber for the time of a case.
 */
export class Probe {
  calls = 0;
  private readonly escaped: string[] = [];
  private readonly seen = new Set<string>();

  constructor(
    private readonly l: TestBackend,
    private readonly bound: number,
    private readonly spec: unknown,
  ) {}

  install(): () => void {
    const rejection = (r: unknown): void => void this.escaped.push(`an unhandled rejection: ${showValue(r)}`);
    const exception = (e: unknown): void => void this.escaped.push(`an uncaught exception: ${showValue(e)}`);
    process.on('unhandledRejection', rejection);
    process.on('uncaughtException', exception);
    const off = this.l.events.subscribe({ stores: ['local'], kinds: ['task'] }, (e: LesslEvent) => {
      if (e.id.key.includes('/live-')) this.seen.add(`${e.type} ${e.id.key}`);
    });
    return () => {
      off();
      process.off('unhandledRejection', rejection);
      process.off('uncaughtException', exception);
    };
  }

  /** A TaskEither-returning call. */
  async te(name: string, call: () => unknown): Promise<void> {
    this.calls++;
    const te = this.sync(name, call);
    if (!isThunk(te)) return assert.fail(`${name} did not answer a TaskEither`);
    const p = this.sync(`${name}: its TaskEither`, te);
    assert.ok(types.isPromise(p), `${name}: its TaskEither did not answer a Promise`);
    const r = await this.settled(name, p, (e) => `${name}: its TaskEither rejected with ${showValue(e)}`);
    if (!isEither(r)) return assert.fail(`${name} did not answer an Either`);
    if (E.isLeft(r)) assert.ok(isLesslError(r.left), `${name} answered a Left that is not a lessl error`);
    await this.after(name);
  }

  /** A call through the Promise façade: a Promise that rejects only with a `LesslError`. */
  async promised(name: string, call: () => unknown): Promise<void> {
    this.calls++;
    const p = this.sync(name, call);
    assert.ok(types.isPromise(p), `${name} did not answer a Promise`);
    await this.settled(name, p, typedRejection(name));
    await this.after(name);
  }

  /** `subscribe` (plain or through the façade): answers a function; the check runs while subscribed. */
  async subscribed(name: string, call: () => unknown): Promise<void> {
    this.calls++;
    const off = this.sync(name, call);
    if (types.isPromise(off)) off.catch(() => undefined); // reported below, not as an unhandled rejection
    if (!isThunk(off)) return assert.fail(`${name} did not answer an Unsubscribe`);
    await this.after(name);
    this.sync(`${name}: its Unsubscribe`, off);
  }

  /** An async iterable (`logs`, `stream`): its first `next()` settles (rejecting only with a LesslError). */
  async iterated(name: string, call: () => unknown, close: boolean): Promise<void> {
    this.calls++;
    const it = this.sync(name, call);
    const iterator = this.sync(`${name}: [Symbol.asyncIterator]()`, () => asyncIteratorOf(it));
    const first = outcomeOf(this.sync(`${name}: next()`, () => iterator.next()));
    if (close) {
      await tick();
      this.sync(`${name}: close()`, () => closeIfClosable(it));
    }
    await this.settled(`${name}: next()`, first, typedRejection(`${name}: next()`));
    const ret = this.sync(`${name}: return()`, () => iterator.return?.());
    await this.settled(`${name}: return()`, ret, (e) => `${name}: return() rejected with ${showValue(e)}`);
    await this.after(name);
  }

  /** `call()`, failing the property when it throws synchronously. */
  private sync<A>(name: string, call: () => A): A {
    try {
      return call();
    } catch (e) {
      return assert.fail(`${name} threw synchronously: ${showValue(e)}`);
    }
  }

  /**
   * The value `p` resolves with, within the bound; `why` says whether a rejection fails the
   * property. When `p` does not settle, tells a wedged registry from a call that hangs alone.
   */
  private async settled(name: string, p: unknown, why: (e: unknown) => string | undefined): Promise<unknown> {
    const r = await within(outcomeOf(p), this.bound);
    if (r === TIMEOUT) {
      await this.writes(`${name} did not settle within ${this.bound} ms, and then`);
      return assert.fail(`${name} did not settle within ${this.bound} ms`);
    }
    if (r.ok) return r.value;
    const bad = why(r.error);
    return bad === undefined ? undefined : assert.fail(bad);
  }

  /** The property after each call: nothing escaped, later writes work, subscribers see them. */
  private async after(name: string): Promise<void> {
    await tick();
    if (this.escaped.length > 0) assert.fail(`${name}: ${this.escaped.join('; ')} escaped lessl`);
    await this.writes(`after ${name}`);
  }

  /** A create, read and delete succeed within the bound, and the sentinel subscriber sees their events. */
  private async writes(when: string): Promise<void> {
    const id = `task://local/${uniq('live')}`;
    const store = this.l.stores.task;
    const write = (async (): Promise<string | undefined> => {
      const c = await store.create({ id, spec: this.spec })();
      if (E.isLeft(c)) return `create answered ${c.left._tag}: ${c.left.message}`;
      const r = await store.read(id)();
      if (E.isLeft(r)) return `read answered ${r.left._tag}: ${r.left.message}`;
      const d = await store.delete(id)();
      return E.isLeft(d) ? `delete answered ${d.left._tag}: ${d.left.message}` : undefined;
    })();
    const r = await within(write, this.bound);
    if (r === TIMEOUT)
      assert.fail(
        `${when}: the registry is wedged: a later create/read/delete did not settle within ${this.bound} ms ` +
          '(every later write and close() hang)',
      );
    if (r !== undefined) assert.fail(`${when}: a later write failed: ${r}`);
    for (const type of ['created', 'deleted'])
      assert.ok(this.seen.delete(`${type} ${id}`), `${when}: a subscriber missed the ${type} event of a later write`);
  }
}
