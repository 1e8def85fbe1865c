/**
 * Reading untrusted input without being wedged, crashed or fooled by it (internal to core).
 *
 * Anything a caller passes may be a Proxy (revoked, or with throwing traps), have throwing or
 * changing getters, be cyclic, be a huge sparse array, or use keys named like
 * `Object.prototype` members. The helpers here read such input once, inside `try`, into plain
 * data that validators can then inspect freely.
 */
import * as E from 'fp-ts/lib/Either.js';

/** A plain record of own data properties, as produced by `plainCopy`. */
export type PlainRecord = Record<string, unknown>;

/** How deep `plainCopy` follows objects; deeper (or cyclic) input is refused. */
export const MAX_DEPTH = 16;
/** How many properties and array slots `plainCopy` visits in all; more is refused. */
export const MAX_NODES = 100_000;

const typedArrayProto = Object.getPrototypeOf(Uint8Array.prototype) as object;
const typedArrayName = Object.getOwnPropertyDescriptor(typedArrayProto, Symbol.toStringTag)?.get;
const typedArrayBytes = Object.getOwnPropertyDescriptor(typedArrayProto, 'byteLength')?.get;

/** True for a genuine `Uint8Array` (a `Buffer` too), judged by internal slots: no code of `u` runs. */
export const isBytes = (u: unknown): u is Uint8Array => typedArrayName?.call(u) === 'Uint8Array';

/** The byte length of a genuine `Uint8Array`, which the value cannot lie about. */
export const byteLength = (u: Uint8Array): number => (typedArrayBytes?.call(u) as number | undefined) ?? 0;

const tagOf = (u: unknown): string => {
  try {
    return Object.prototype.toString.call(u);
  } catch {
    return `[${typeof u}]`;
  }
};

/** A printable form of any value, for messages. Never throws, even for revoked Proxies. */
export const safeShow = (u: unknown): string => {
  if (typeof u === 'string') return u;
  if (typeof u === 'symbol' || typeof u === 'bigint') return tagOf(u);
  try {
    return JSON.stringify(u) ?? tagOf(u);
  } catch {
    return tagOf(u);
  }
};

/** True when `u` is a non-null object that is neither an array nor a typed array. Never throws. */
export const isRecordLike = (u: unknown): u is object => {
  if (typeof u !== 'object' || u === null || ArrayBuffer.isView(u)) return false;
  try {
    return !Array.isArray(u);
  } catch {
    return false; // a revoked Proxy
  }
};

/** Own property `k` of a plain record, or `undefined`; never an inherited member like `toString`. */
export const own = (r: PlainRecord, k: string): unknown => (Object.hasOwn(r, k) ? r[k] : undefined);

/** Copies input into plain data within the limits; `refusal` says why it gave up. */
class Copier {
  private nodes = 0;
  refusal: string | undefined;

  private refuse(reason: string): never {
    this.refusal = reason;
    throw new Error(reason);
  }

  private visit(n: number): void {
    this.nodes += n;
    if (this.nodes > MAX_NODES) this.refuse(`is larger than ${MAX_NODES} properties and items`);
  }

  copy(u: unknown, depth: number): unknown {
    if (typeof u !== 'object' || u === null || ArrayBuffer.isView(u)) return u;
    if (depth >= MAX_DEPTH) this.refuse(`is nested deeper than ${MAX_DEPTH} levels (or cyclic)`);
    return Array.isArray(u) ? this.array(u, depth) : this.record(u, depth);
  }

  private array(a: readonly unknown[], depth: number): unknown[] {
    const n = a.length;
    if (!Number.isSafeInteger(n) || n < 0) this.refuse('holds an array with an invalid length');
    this.visit(n);
    const out: unknown[] = [];
    for (let i = 0; i < n; i++) out.push(this.copy(a[i], depth + 1));
    return out;
  }

  private record(o: object, depth: number): PlainRecord {
    const keys = Object.keys(o);
    this.visit(keys.length);
    return Object.fromEntries(keys.map((k) => [k, this.copy((o as PlainRecord)[k], depth + 1)]));
  }
}

/**
 * Copies `u` into plain data, reading every property exactly once: arrays become arrays,
 * other objects records of their own enumerable string-keyed properties (created as own data
 * properties, so a `__proto__` key stays a key). Primitives, functions and typed arrays are
 * kept as they are. Answers why not (a predicate: `is nested deeper than ...`) when `u` is too
 * deep, cyclic, too large or throws while being read.
 */
export const plainCopy = (u: unknown): E.Either<string, unknown> => {
  const c = new Copier();
  try {
    return E.right(c.copy(u, 0));
  } catch {
    return E.left(c.refusal ?? 'could not be read (a getter or Proxy trap threw)');
  }
};

/** `plainCopy`, then requires a record (not an array or a primitive). */
export const plainRecord = (u: unknown): E.Either<string, PlainRecord> => {
  const c = plainCopy(u);
  if (E.isLeft(c)) return c;
  return isRecordLike(c.right) ? E.right(c.right as PlainRecord) : E.left('must be an object');
};
