/**
 * ro/rw caller metadata (Go's `map[string][]byte`) and their rules (docs/errors.md#metadata-rules).
 *
 * Limits (answered with `InvalidEntry` naming the keys):
 * - key: 1..256 chars of `[A-Za-z0-9._/:-]`, starting with a letter or digit;
 * - value: a `Uint8Array` of at most 64 KiB (`MAX_VALUE_BYTES`); no null/undefined on create;
 * - at most 256 keys per map (`MAX_KEYS`).
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, readOnlyKey, type InvalidEntry, type ReadOnlyKey } from './errors.js';
import { byteLength, isBytes, isRecordLike, safeShow } from './safe.js';

/** Caller metadata: string keys to bytes. */
export type Metadata = Readonly<Record<string, Uint8Array>>;
/** An rw patch: a `null` value deletes the key. */
export type MetadataPatch = Readonly<Record<string, Uint8Array | null>>;

/** Largest value accepted, in bytes. */
export const MAX_VALUE_BYTES = 64 * 1024;
/** Most keys accepted in one map. */
export const MAX_KEYS = 256;
const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._/:-]{0,255}$/;

/**
 * True when `k` is a valid metadata key. Keys named like `Object.prototype` members
 * (`constructor`, `toString`, ...) are valid; `__proto__` is not (it starts with `_`).
 */
export const isValidKey = (k: unknown): k is string => typeof k === 'string' && KEY_RE.test(k);

/** Why value `v` is refused, or `undefined` when it is accepted. */
const badValue = (v: unknown, allowNull: boolean): string | undefined => {
  if (v === null && allowNull) return undefined;
  if (v === null || v === undefined) return 'nil value';
  if (!isBytes(v)) return 'value is not bytes';
  const n = byteLength(v);
  return n > MAX_VALUE_BYTES ? `value is ${n} bytes; at most ${MAX_VALUE_BYTES}` : undefined;
};

type Checked = E.Either<InvalidEntry, Record<string, Uint8Array | null>>;

/** Validates one map; reads each key and value of `input` exactly once, and answers copies of the values. */
const checkMap = (id: string, what: string, input: unknown, allowNull: boolean): Checked => {
  if (input === undefined) return E.right({});
  if (!isRecordLike(input)) return E.left(invalidEntry(`${what} must be an object of byte values`, id, [what]));
  const keys = Object.keys(input);
  if (keys.length > MAX_KEYS)
    return E.left(invalidEntry(`${what} has ${keys.length} keys; at most ${MAX_KEYS} are allowed`, id, [what]));
  const reasons: Record<string, string> = Object.create(null) as Record<string, string>;
  const entries: [string, Uint8Array | null][] = [];
  for (const k of keys) {
    const v: unknown = Reflect.get(input, k);
    const why = isValidKey(k) ? badValue(v, allowNull) : 'invalid key syntax';
    // a fresh copy (read through internal slots): the caller's array may have a trapping prototype or change later
    if (why === undefined) entries.push([k, isBytes(v) ? new Uint8Array(v) : null]);
    else reasons[k] = why;
  }
  const bad = Object.keys(reasons);
  if (bad.length > 0) {
    const list = bad.map((k) => `${k} (${reasons[k] ?? ''})`).join(', ');
    return E.left(invalidEntry(`invalid ${what} entries: ${list}`, id, bad, { reasons: { ...reasons } }));
  }
  return E.right(Object.fromEntries(entries));
};

/** Runs `f`; a throw met on hostile input (a getter, a Proxy trap) becomes `InvalidEntry`. */
const guarded = <A>(id: string, what: string, f: () => E.Either<InvalidEntry | ReadOnlyKey, A>) => {
  try {
    return f();
  } catch {
    return E.left(invalidEntry(`${what} could not be read (a getter or Proxy trap threw)`, id, [what]));
  }
};

const idString = (id: unknown): string => (typeof id === 'string' ? id : safeShow(id));

/** Keys of `m` that are own keys of `ro` too (never inherited members like `constructor`). */
const clashes = (m: object, ro: object): string[] => Object.keys(m).filter((k) => Object.hasOwn(ro, k));

/**
 * Validates create-time ro/rw: no nil values, key syntax, sizes, and no rw key present in ro.
 * Never throws: any input that is not two maps of bytes is `InvalidEntry`.
 */
export const validateCreateMetadata = (
  id: string,
  ro: unknown,
  rw: unknown,
): E.Either<InvalidEntry | ReadOnlyKey, { ro: Metadata; rw: Metadata }> => {
  const sid = idString(id);
  return guarded(sid, 'metadata', () => {
    const r = checkMap(sid, 'ro', ro, false);
    if (E.isLeft(r)) return r;
    const w = checkMap(sid, 'rw', rw, false);
    if (E.isLeft(w)) return w;
    const clash = clashes(w.right, r.right);
    if (clash.length > 0) return E.left(readOnlyKey(sid, clash));
    return E.right({ ro: r.right as Metadata, rw: w.right as Metadata });
  });
};

/**
 * Validates an rw patch against the element's ro keys. Never throws: a patch that is not a
 * map of bytes or `null`s is `InvalidEntry`.
 */
export const validatePatch = (id: string, patch: unknown, ro: Metadata): E.Either<InvalidEntry | ReadOnlyKey, MetadataPatch> => {
  const sid = idString(id);
  if (patch === undefined || patch === null) return E.left(invalidEntry('an update patch must be an object', sid, ['patch']));
  return guarded(sid, 'patch', () => {
    const p = checkMap(sid, 'patch', patch, true);
    if (E.isLeft(p)) return p;
    const clash = isRecordLike(ro) ? clashes(p.right, ro) : [];
    if (clash.length > 0) return E.left(readOnlyKey(sid, clash));
    return E.right(p.right);
  });
};

/** Applies a validated patch: `null` deletes, bytes set. */
export const applyPatch = (rw: Metadata, patch: MetadataPatch): Metadata => {
  const out: Record<string, Uint8Array> = { ...rw };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
};

const enc = new TextEncoder();
const dec = new TextDecoder();
/** Encodes a string record into metadata (UTF-8). Handy for callers. */
export const utf8 = (rec: Readonly<Record<string, string>>): Metadata =>
  Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, enc.encode(v)]));
/** Decodes metadata values as UTF-8 strings. */
export const fromUtf8 = (m: Metadata): Record<string, string> =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [k, dec.decode(v)]));
/** Byte-wise equality. */
export const bytesEqual = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && Buffer.compare(a, b) === 0;
