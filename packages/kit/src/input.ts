/**
 * A process's input as callers give it (`TaskInput`: bytes, text or a stream of chunks), read
 * into the one shape drivers write: an async iterable of byte chunks, read once.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, isObject, type InvalidEntry } from '@lessl/core';

const enc = new TextEncoder();

/** An input that is empty: stdin closed at once. */
export const NO_INPUT: AsyncIterable<Uint8Array> = {
  [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }),
};

const once = (b: Uint8Array): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    if (b.byteLength > 0) yield b;
  },
});

const isAsyncIterable = (u: unknown): u is AsyncIterable<unknown> =>
  isObject(u) && typeof Reflect.get(u, Symbol.asyncIterator) === 'function';

/** Chunks of a stream, each checked to be bytes (text chunks are encoded); anything else throws `InvalidEntry`-tagged. */
const checked = (src: AsyncIterable<unknown>, id: string, field: string): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    for await (const c of src) {
      if (c instanceof Uint8Array) yield c;
      else if (typeof c === 'string') yield enc.encode(c);
      else throw invalidEntry(`${field} must yield bytes (Uint8Array) or text`, id, [field]);
    }
  },
});

/**
 * Reads a caller's input: `undefined` is empty input; bytes, text (UTF-8) and async iterables of
 * bytes or text are input; anything else is `InvalidEntry` naming `field`.
 */
export const inputOf = (u: unknown, id: string, field = 'stdin'): E.Either<InvalidEntry, AsyncIterable<Uint8Array>> => {
  if (u === undefined) return E.right(NO_INPUT);
  if (u instanceof Uint8Array) return E.right(once(u));
  if (typeof u === 'string') return E.right(once(enc.encode(u)));
  if (isAsyncIterable(u)) return E.right(checked(u, id, field));
  return E.left(invalidEntry(`${field} must be bytes (Uint8Array), a string or an async iterable of bytes`, id, [field]));
};
