/**
 * A task's input (its stdin): what a caller gives (`TaskInput`: bytes, text, or a stream of
 * chunks) read once into a checked stream, held for the task's next run, and written into a
 * process by a driver (`pipeInput`: back-pressure, then end of file; quiet when the process is gone).
 */
import { Duplex, type Writable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, type InvalidEntry } from '@lessl/core';

/** Chunks handed to a process at most this large (bytes given at once are cut into such chunks). */
const CHUNK = 64 * 1024;

const enc = new TextEncoder();

/** A run's input as the runtime holds it: a stream read at most once, `touched` once reading began. */
export class HeldInput implements AsyncIterable<Uint8Array> {
  touched = false;
  constructor(private readonly source: AsyncIterable<Uint8Array>) {}

  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    this.touched = true;
    return this.source[Symbol.asyncIterator]();
  }
}

/** An input with no bytes: the process's stdin is closed at once. */
export const emptyInput = (): AsyncIterable<Uint8Array> => ({
  [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true, value: undefined }) }),
});

/** Bytes as chunks of at most `CHUNK` bytes (views of one private copy). */
async function* chunksOf(bytes: Uint8Array): AsyncGenerator<Uint8Array, void, undefined> {
  for (let at = 0; at < bytes.byteLength; at += CHUNK) yield bytes.subarray(at, at + CHUNK);
}

/** A caller's stream, checked chunk by chunk: bytes pass, text is UTF-8 encoded, anything else ends it with an error. */
async function* checkedChunks(source: AsyncIterable<unknown>): AsyncGenerator<Uint8Array, void, undefined> {
  for await (const c of source) {
    if (typeof c === 'string') {
      if (c.length > 0) yield enc.encode(c);
    } else if (c instanceof Uint8Array) {
      if (c.byteLength > 0) yield c;
    } else throw new TypeError('stdin chunks must be Uint8Array (or string)');
  }
}

/** True when `u` is an async iterable (a getter that throws is not one). */
const isAsyncIterable = (u: unknown): u is AsyncIterable<unknown> => {
  if (typeof u !== 'object' || u === null) return false;
  try {
    return typeof Reflect.get(u, Symbol.asyncIterator) === 'function';
  } catch {
    return false;
  }
};

/**
 * Reads what a caller gives as a task's stdin, once: bytes (copied now), a string (UTF-8) or an
 * async iterable of `Uint8Array` (read as the process takes it; a chunk of another type ends the
 * input there). Anything else is `InvalidEntry` naming `stdin`.
 */
export const readInput = (id: string, u: unknown): E.Either<InvalidEntry, HeldInput> => {
  const bad = E.left(
    invalidEntry('stdin must be bytes (a Uint8Array), a string, or an async iterable of Uint8Array chunks', id, ['stdin']),
  );
  try {
    if (typeof u === 'string') return E.right(new HeldInput(chunksOf(enc.encode(u))));
    if (u instanceof Uint8Array) return E.right(new HeldInput(chunksOf(new Uint8Array(u))));
    if (isAsyncIterable(u)) return E.right(new HeldInput(checkedChunks(u)));
    return bad;
  } catch {
    return bad; // a Proxy whose traps throw
  }
};

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
