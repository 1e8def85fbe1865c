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

const SHOW_NODES = 1000;
const SHOW_CHARS = 200;

/**
 * A printable form of any value, for messages: at most ~200 characters, from at most 1000
 * values. Never throws, even for revoked Proxies, and never wedges on huge or sparse arrays.
 */
export const safeShow = (u: unknown): string => {
  if (typeof u === 'string') return u;
  if (typeof u === 'symbol') return String(u); // never calls code of `u`
  if (typeof u === 'bigint') return `${u}n`;
  let n = 0;
  const count = (_k: string, v: unknown): unknown => {
    if (++n > SHOW_NODES) throw new Error('too large to show');
    return v;
  };
  try {
    const s = JSON.stringify(u, count);
    if (s === undefined) return tagOf(u);
    return s.length > SHOW_CHARS ? `${s.slice(0, SHOW_CHARS)}...` : s;
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

/**
 * `u` when it is an array of at most `MAX_NODES` items (what `plainCopy` lets through), else
 * `undefined`: iterating a sparse array of length 2^32-1 would wedge. Never throws.
 */
export const boundedArray = (u: unknown): readonly unknown[] | undefined => {
  try {
    return Array.isArray(u) && u.length <= MAX_NODES ? u : undefined;
  } catch {
    return undefined;
  }
};

/** Own property `k` of a plain record, or `undefined`; never an inherited member like `toString`. */
export const own = (r: PlainRecord, k: string): unknown => (Object.hasOwn(r, k) ? r[k] : undefined);

// What `plainCopy` puts in place of functions and non-byte views: a function may be a Proxy that
// throws on any use, a view may have a trapping prototype, and no input read this way takes
// either. Symbols are valid nowhere in lessl input, and show as `Symbol(a function)`.
const A_FUNCTION = Symbol('a function');
const A_VIEW = Symbol('a typed array other than Uint8Array');

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
    if (typeof u === 'function') return A_FUNCTION;
    if (typeof u !== 'object' || u === null) return u;
    if (ArrayBuffer.isView(u)) return this.view(u);
    if (depth >= MAX_DEPTH) this.refuse(`is nested deeper than ${MAX_DEPTH} levels (or cyclic)`);
    return Array.isArray(u) ? this.array(u, depth) : this.record(u, depth);
  }

  /** A genuine `Uint8Array` becomes a fresh copy (read through internal slots, not getters). */
  private view(v: ArrayBufferView): unknown {
    if (!isBytes(v)) return A_VIEW;
    this.visit(byteLength(v));
    return new Uint8Array(v);
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
    return Object.fromEntries(keys.map((k) => [k, this.copy(Reflect.get(o, k), depth + 1)]));
  }
}

/**
 * Copies `u` into plain data, reading every property exactly once: arrays become arrays,
 * other objects records of their own enumerable string-keyed properties (created as own data
 * properties, so a `__proto__` key stays a key; a `Uint8Array` becomes a fresh one, each byte
 * counting towards the size limit). Primitives are kept; functions and other typed arrays
 * become symbols, which no validator accepts. Answers why not (a predicate: `is nested deeper than ...`) when `u` is too
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

const kindOf = (v: unknown): string =>
  typeof v === 'bigint'
    ? 'a BigInt'
    : typeof v === 'symbol'
      ? 'a function, symbol or typed array'
      : typeof v === 'number'
        ? 'a number that is not finite'
        : v === undefined
          ? 'undefined'
          : 'binary data';

/** Why plain data `v` (from `plainCopy`) is not JSON data, with the path of the offending value. */
const notJson = (v: unknown, path: string): string | undefined => {
  if (v === null || typeof v === 'string' || typeof v === 'boolean') return undefined;
  if (typeof v === 'number' && Number.isFinite(v)) return undefined;
  if (Array.isArray(v)) {
    for (const [i, x] of v.entries()) {
      const why = notJson(x, `${path}[${i}]`);
      if (why !== undefined) return why;
    }
    return undefined;
  }
  if (typeof v === 'object' && !ArrayBuffer.isView(v)) {
    for (const k of Object.keys(v)) {
      const x: unknown = Reflect.get(v, k);
      const why = x === undefined ? undefined : notJson(x, path === '' ? k : `${path}.${k}`);
      if (why !== undefined) return why;
    }
    return undefined;
  }
  return `${path === '' ? 'the value' : path} is ${kindOf(v)}`;
};

/**
 * A plain copy of `u` (see `plainCopy`) that is JSON data: strings, finite numbers, booleans,
 * `null`, arrays and records of them (record properties that are `undefined` are left out, as
 * JSON does). Otherwise why not, naming the offending path (`a.b[2] is a BigInt`); cycles,
 * throwing getters and Proxy traps are refused too. Never throws. What lessl persists from a
 * caller (backend options, for instance) goes through this first.
 */
export const jsonData = (u: unknown): E.Either<string, unknown> => {
  const c = plainCopy(u);
  if (E.isLeft(c)) return E.left(`it ${c.left}`);
  const why = notJson(c.right, '');
  const copy: unknown = why === undefined ? JSON.parse(JSON.stringify(c.right)) : undefined;
  return why === undefined ? E.right(copy) : E.left(why);
};
