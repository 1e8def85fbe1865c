/**
 * The Promise façade, for callers who do not use fp-ts: it rejects with a `LesslError`
 * whose `.tag` is the error's `_tag`.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { LesslError, runtimeError, type AnyError } from './errors.js';

/**
 * Runs a TaskEither: resolves with its right, rejects with `LesslError` for its left.
 * @example const el = await unwrap(store.read('image://local/busybox'))
 */
export const unwrap = async <E extends AnyError, A>(te: TaskEither<E, A>): Promise<A> => {
  let r: E.Either<E, A>;
  try {
    r = await te();
  } catch (cause) {
    throw new LesslError(runtimeError('', 'unexpected failure', cause));
  }
  if (E.isLeft(r)) throw new LesslError(r.left);
  return r.right;
};

/** An object whose TaskEither-returning methods return Promises instead. */
export type Promisified<T> = {
  readonly [K in keyof T]: T[K] extends (...args: infer A) => TaskEither<infer _E, infer R> ? (...args: A) => Promise<R> : T[K];
};

/**
 * Wraps a store, composer (or any object of TaskEither methods) into Promise style.
 * @example const images = promise(stores.image); await images.create({ id: 'image://local/a' })
 */
export const promise = <T extends object>(target: T): Promisified<T> =>
  new Proxy(target, {
    get(obj, prop, recv) {
      const v: unknown = Reflect.get(obj, prop, recv);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        const out: unknown = (v as (...a: unknown[]) => unknown).apply(obj, args);
        return typeof out === 'function' ? unwrap(out as TaskEither<AnyError, unknown>) : out;
      };
    },
  }) as Promisified<T>;
