/**
 * Checksums `sha256:<hex>`, verified while the data streams.
 */
import { createHash, type Hash } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, unsupportedChecksum, type InvalidEntry, type UnsupportedChecksum } from './errors.js';
import { byteLength, isBytes, safeShow } from './safe.js';

/**
 * What `create` accepts as data: bytes, or any async iterable of bytes: a Node Readable, a
 * tar-fs or tar-stream `pack()` (typed as yielding `unknown`), an async generator. A chunk that
 * is not bytes (or a string) fails the create with `InvalidEntry`.
 */
export type DataSource = Uint8Array | AsyncIterable<Uint8Array> | AsyncIterable<unknown>;

/** A parsed checksum. */
export interface Checksum {
  readonly algorithm: 'sha256';
  readonly hex: string;
}

/** Parses `sha256:<64 hex>`; other algorithms are `UnsupportedChecksum`. */
export const parseChecksum = (id: string, s: unknown): E.Either<UnsupportedChecksum, Checksum> => {
  if (typeof s !== 'string') return E.left(unsupportedChecksum(id, safeShow(s)));
  const m = /^sha256:([0-9a-f]{64})$/.exec(s.toLowerCase());
  return m === null ? E.left(unsupportedChecksum(id, s)) : E.right({ algorithm: 'sha256', hex: m[1] ?? '' });
};

/** Renders a checksum. */
export const formatChecksum = (c: Checksum): string => `${c.algorithm}:${c.hex}`;

/** sha256 of a byte array, as `sha256:<hex>`. */
export const sha256 = (data: Uint8Array): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** True when `u` can be used as a data source: bytes, or an object with an async iterator. Never throws. */
export const isDataSource = (u: unknown): u is DataSource => {
  if (isBytes(u)) return true;
  if (typeof u !== 'object' || u === null) return false;
  try {
    return Symbol.asyncIterator in u && typeof u[Symbol.asyncIterator] === 'function';
  } catch {
    return false;
  }
};

/**
 * Wraps a data source so it is hashed as it is consumed. `digest()` is valid once the
 * iteration has finished. Non-byte chunks end the iteration with an `InvalidEntry` thrown
 * inside the iterator, which stores catch and answer as a typed error.
 */
export const hashing = (
  id: string,
  src: DataSource,
): { readonly stream: AsyncIterable<Uint8Array>; readonly digest: () => string; readonly bytes: () => number } => {
  const h: Hash = createHash('sha256');
  let n = 0;
  let done: string | undefined;
  const stream: AsyncIterable<Uint8Array> = {
    async *[Symbol.asyncIterator]() {
      if (isBytes(src)) {
        h.update(src);
        n += byteLength(src);
        yield src;
      } else {
        for await (const chunk of src as AsyncIterable<unknown>) {
          const c = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
          if (!isBytes(c)) throw new DataError(invalidEntry('data stream yielded a non-byte chunk', id, ['data']));
          h.update(c);
          n += byteLength(c);
          yield c;
        }
      }
      done = `sha256:${h.digest('hex')}`;
    },
  };
  return { stream, digest: () => done ?? 'sha256:incomplete', bytes: () => n };
};

/** Thrown inside data iterators only; stores convert it to its error value. */
export class DataError extends Error {
  constructor(readonly error: InvalidEntry) {
    super(error.message);
    this.name = 'DataError';
  }
}

/** Reads a data source fully into memory, hashing it. */
export const collect = async (id: string, src: DataSource): Promise<{ data: Uint8Array; digest: string }> => {
  const hs = hashing(id, src);
  const parts: Uint8Array[] = [];
  for await (const c of hs.stream) parts.push(c);
  return { data: Buffer.concat(parts), digest: hs.digest() };
};
