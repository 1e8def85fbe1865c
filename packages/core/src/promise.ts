/**
 * The Promise façade, for callers who do not use fp-ts: it rejects with a `LesslError`
 * whose `.tag` is the error's `_tag`.
 */
import { types } from 'node:util';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { invalidEntry, isLesslError, LesslError, runtimeError, type AnyError } from './errors.js';
import { safeShow } from './safe.js';

type Settled = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: LesslError };

const failed = (message: string, cause?: unknown): Settled => ({
  ok: false,
  error: new LesslError(runtimeError('', message, cause === undefined ? undefined : safeShow(cause))),
});

/**
 * True for a value Promises would adopt (one with a callable `then`, or whose `then` cannot be
 * read). Such a value may never settle, so the façade refuses it rather than awaiting it.
 */
const isThenable = (v: unknown): boolean => {
  if ((typeof v !== 'object' || v === null) && typeof v !== 'function') return false;
  try {
    return typeof (v as { then?: unknown }).then === 'function';
  } catch {
    return true;
  }
};

/** Reads an Either's outcome; a malformed one, or a left that is not a lessl error, is a `RuntimeError`. */
const outcome = (r: unknown): Settled => {
  const { _tag: tag, left, right } = r as { _tag?: unknown; left?: unknown; right?: unknown };
  if (tag === 'Right') {
    return isThenable(right) ? failed('a Right must hold a value, not a thenable') : { ok: true, value: right };
  }
  if (tag !== 'Left') return failed('a TaskEither must resolve to an Either');
  return isLesslError(left) ? { ok: false, error: new LesslError(left) } : failed('failed with a non-lessl error', left);
};

/** Runs `te` to its outcome. Never rejects: whatever it throws or answers is caught here. */
const settle = async (te: unknown): Promise<Settled> => {
  try {
    const out = (te as () => unknown)();
    if (isThenable(out) && !types.isPromise(out)) return failed('a TaskEither must return a Promise');
    return await outcome(await out);
  } catch (cause) {
    return failed('unexpected failure', cause);
  }
};

/**
 * Runs a TaskEither: resolves with its right, rejects with `LesslError` for its left. Whatever
 * else happens (`te` is not a function, throws, resolves to something not an Either) rejects
 * with a `LesslError` too (`RuntimeError`), never with anything else.
 * @example const el = await unwrap(store.read('image://local/busybox'))
 */
export const unwrap = async <E extends AnyError, A>(te: TaskEither<E, A>): Promise<A> => {
  const s = await settle(te);
  if (!s.ok) throw s.error;
  return s.value as A;
};

/** An object whose TaskEither-returning methods return Promises instead. */
export type Promisified<T> = {
  readonly [K in keyof T]: T[K] extends (...args: infer A) => TaskEither<infer _E, infer R>
    ? (...args: A) => Promise<K extends 'commit' ? Exclude<R, { readonly committed: false }> : R>
    : T[K];
};

/**
 * How a commit that was rolled back rejects through the Promise façade (one error channel): the
 * failing step's error, with every step's result. (In fp-ts style it stays a Right with
 * `committed: false`, as the steps' results are part of the answer.)
 */
export class LesslCommitError extends LesslError {
  readonly results: readonly unknown[];
  constructor(error: AnyError, results: readonly unknown[]) {
    super(error);
    this.name = 'LesslCommitError';
    this.results = results;
  }
}

/** A commit result that was rolled back, as a rejection; anything else as is. */
const commitOutcome = (r: unknown): unknown => {
  const c = r as { committed?: unknown; error?: unknown; results?: unknown } | null;
  if (typeof c !== 'object' || c === null || c.committed !== false || !isLesslError(c.error)) return r;
  throw new LesslCommitError(c.error, Array.isArray(c.results) ? c.results : []);
};

const rejecting = (error: AnyError) => (): Promise<never> => Promise.reject(new LesslError(error));

const AS_IS = Symbol.for('lessl.promise.asIs');

/**
 * Marks a function that a method answers as a value of its own (an `Unsubscribe`): the Promise
 * façade hands it back as is instead of running it as a TaskEither.
 */
export const asIs = <F extends (...args: never[]) => unknown>(f: F): F => Object.defineProperty(f, AS_IS, { value: true });

const isAsIs = (f: unknown): boolean => {
  try {
    return (f as { [AS_IS]?: unknown })[AS_IS] === true;
  } catch {
    return false;
  }
};

/** Calls method `fn` of `obj`: a TaskEither result is run, anything else returned as is; a throw rejects. */
const invoke = (fn: (...a: unknown[]) => unknown, obj: object, args: unknown[]): unknown => {
  let out: unknown;
  try {
    out = Reflect.apply(fn, obj, args);
  } catch (cause) {
    return Promise.reject(new LesslError(runtimeError('', 'the method threw', safeShow(cause))));
  }
  return typeof out === 'function' && !isAsIs(out) ? unwrap(out as TaskEither<AnyError, unknown>) : out;
};

/** Property `prop` of `obj` through the façade. `then` is never faked, so awaiting the façade stays safe. */
const facadeGet = (obj: object, prop: string | symbol, recv: unknown): unknown => {
  let v: unknown;
  try {
    v = Reflect.get(obj, prop, recv);
  } catch (cause) {
    const unreadable = runtimeError('', `property ${String(prop)} could not be read`, safeShow(cause));
    return typeof prop === 'symbol' || prop === 'then' ? undefined : rejecting(unreadable);
  }
  if (typeof v !== 'function') return v;
  if (prop === 'commit')
    return (...args: unknown[]) => Promise.resolve(invoke(v as (...a: unknown[]) => unknown, obj, args)).then(commitOutcome);
  return (...args: unknown[]) => invoke(v as (...a: unknown[]) => unknown, obj, args);
};

const notAnObject = (prop: string | symbol): unknown =>
  typeof prop === 'symbol' || prop === 'then'
    ? undefined
    : rejecting(invalidEntry('promise() needs an object of TaskEither methods', '', ['target']));

const has = (obj: object, prop: string | symbol): boolean => {
  try {
    return Reflect.has(obj, prop);
  } catch {
    return false;
  }
};

/**
 * Wraps a store, composer (or any object of TaskEither methods) into Promise style; other
 * answers (an event source's `Unsubscribe`, a stream, a number) are handed back as is. Never
 * throws: methods that throw reject with a `LesslError`; for a target that is not an object,
 * every method rejects with `InvalidEntry`.
 * @example const images = promise(stores.image); await images.create({ id: 'image://local/a' })
 */
export const promise = <T extends object>(target: T): Promisified<T> => {
  const usable = (typeof target === 'object' || typeof target === 'function') && target !== null;
  // The Proxy's own target is a fresh object: the engine checks Proxy invariants against it,
  // which would throw were it a revoked or trapping Proxy itself.
  const handler: ProxyHandler<object> = usable
    ? { get: (_t, prop, recv) => facadeGet(target, prop, recv), has: (_t, prop) => has(target, prop) }
    : { get: (_t, prop) => notAnObject(prop) };
  return new Proxy({}, handler) as Promisified<T>;
};
