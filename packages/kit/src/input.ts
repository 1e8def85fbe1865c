/**
 * A process's input as callers give it (`TaskInput`: bytes, text or a stream of chunks), read
 * once into the one shape drivers write: an async iterable of byte chunks. A task's input is
 * held for its next run (`HeldInput`), and written into a process by a driver (`pipeInput`:
 * back-pressure, then end of file; quiet when the process is gone).
 */
import { Duplex, type Writable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, isObject, type InvalidEntry } from '@lessl/core';

/** Chunks handed to a process at most this large (bytes given at once are cut into such chunks). */
const CHUNK = 64 * 1024;

const enc = new TextEncoder();

/** An input that is empty: stdin closed at once. */
export const NO_INPUT: AsyncIterable<Uint8Array> = {
  [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }),
};

/** Bytes as chunks of at most `CHUNK` bytes (views of one private copy, made when the input is read). */
const chunksOf = (given: Uint8Array): AsyncIterable<Uint8Array> => {
  const bytes = new Uint8Array(given);
  return {
    async *[Symbol.asyncIterator]() {
      for (let at = 0; at < bytes.byteLength; at += CHUNK) yield bytes.subarray(at, at + CHUNK);
    },
  };
};

/** True when `u` is an async iterable (a getter that throws is not one). */
const isAsyncIterable = (u: unknown): u is AsyncIterable<unknown> => {
  try {
    return isObject(u) && typeof Reflect.get(u, Symbol.asyncIterator) === 'function';
  } catch {
    return false;
  }
};

/** Chunks of a stream, each checked to be bytes (text chunks are encoded); anything else throws `InvalidEntry`-tagged. */
const checked = (src: AsyncIterable<unknown>, id: string, field: string): AsyncIterable<Uint8Array> => ({
  async *[Symbol.asyncIterator]() {
    for await (const c of src) {
      if (c instanceof Uint8Array) {
        if (c.byteLength > 0) yield c;
      } else if (typeof c === 'string') {
        if (c.length > 0) yield enc.encode(c);
      } else throw invalidEntry(`${field} must yield bytes (Uint8Array) or text`, id, [field]);
    }
  },
});

/** The input `u` is, or undefined when it is none of bytes, text or an async iterable. */
const streamOf = (u: unknown, id: string, field: string): AsyncIterable<Uint8Array> | undefined => {
  if (typeof u === 'string') return chunksOf(enc.encode(u));
  if (u instanceof Uint8Array) return chunksOf(u);
  return isAsyncIterable(u) ? checked(u, id, field) : undefined;
};

/**
 * Reads a caller's input: `undefined` is empty input; bytes (copied now), text (UTF-8) and async
 * iterables of bytes or text (read as the process takes them) are input; anything else, a Proxy
 * whose traps throw included, is `InvalidEntry` naming `field`.
 */
export const inputOf = (u: unknown, id: string, field = 'stdin'): E.Either<InvalidEntry, AsyncIterable<Uint8Array>> => {
  if (u === undefined) return E.right(NO_INPUT);
  let stream: AsyncIterable<Uint8Array> | undefined;
  try {
    stream = streamOf(u, id, field);
  } catch {
    stream = undefined;
  }
  return stream === undefined
    ? E.left(invalidEntry(`${field} must be bytes (Uint8Array), a string or an async iterable of bytes`, id, [field]))
    : E.right(stream);
};

/** A run's input as the runtime holds it: a stream read at most once, `touched` once reading began. */
export class HeldInput implements AsyncIterable<Uint8Array> {
  touched = false;
  constructor(private readonly source: AsyncIterable<Uint8Array>) {}

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    this.touched = true;
    return this.source[Symbol.asyncIterator]();
  }
}

/** Reads a task's input to hold for its next run (`inputOf`; `undefined` is no input here: `InvalidEntry`). */
export const readInput = (id: string, u: unknown): E.Either<InvalidEntry, HeldInput> =>
  u === undefined
    ? E.left(invalidEntry('stdin must be bytes (Uint8Array), a string or an async iterable of bytes', id, ['stdin']))
    : E.map((s: AsyncIterable<Uint8Array>) => new HeldInput(s))(inputOf(u, id));

/**
 * Resolves when the process behind `w` is gone: `w` closes or fails (its errors are handled
 * here: a process that is gone is no failure), or, for a duplex stream (Docker's attach and exec
 * streams), when its readable side ends: the process's output is over, it has exited.
 */
const goneOf = (w: Writable): Promise<'gone'> =>
  new Promise((res) => {
    const done = (): void => res('gone');
    w.on('error', done);
    w.once('close', done);
    if (w instanceof Duplex) w.once('end', done);
    if (w.destroyed) done();
  });

/** Resolves when `w` drains, or with `gone`. */
const drained = (w: Writable, gone: Promise<'gone'>): Promise<unknown> =>
  Promise.race([new Promise<void>((res) => w.once('drain', () => res())), gone]);

/** Writes the chunks of `it` into `w` as it takes them; answers `gone` when the process went first. */
const writeAll = async (it: AsyncIterator<Uint8Array>, w: Writable, gone: Promise<'gone'>): Promise<'gone' | 'done'> => {
  for (;;) {
    const next = await Promise.race([it.next(), gone]);
    if (next === 'gone') return 'gone';
    if (next.done === true) return 'done';
    if (w.destroyed || w.writableEnded) return 'gone';
    if (!w.write(next.value) && (await drained(w, gone)) === 'gone') return 'gone';
  }
};

/**
 * Writes a run's input into a process's stdin: each chunk as the process takes it (back-pressure
 * reaches the producer), then ends it (the process reads end of file). When the process goes
 * first (it exited without reading: EPIPE, a reset, a closed stream, its output over), writing
 * stops quietly, `w` is destroyed (what it still buffers is dropped) and the producer is told
 * (its `return`). A producer that fails ends the input where it failed. Never rejects.
 */
export const pipeInput = async (input: AsyncIterable<Uint8Array>, w: Writable): Promise<void> => {
  const gone = goneOf(w);
  let it: AsyncIterator<Uint8Array> | undefined;
  let outcome: 'gone' | 'done' = 'done';
  try {
    it = input[Symbol.asyncIterator]();
    outcome = await writeAll(it, w, gone);
  } catch {
    // the producer failed: what it gave is written, stdin ends here
  } finally {
    if (outcome === 'gone') w.destroy();
    else if (!w.destroyed && !w.writableEnded) w.end();
    void Promise.resolve(it?.return?.()).catch(() => undefined);
  }
};
