/**
 * ro/rw caller metadata (Go's `map[string][]byte`) and the rules of seed 003.
 *
 * Limits (answered with `InvalidEntry` naming the keys):
 * - key: 1..256 chars of `[A-Za-z0-9._/:-]`, starting with a letter or digit;
 * - value: a `Uint8Array` of at most 64 KiB (`MAX_VALUE_BYTES`); no null/undefined on create;
 * - at most 256 keys per map (`MAX_KEYS`).
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, readOnlyKey, type InvalidEntry, type ReadOnlyKey } from './errors.js';

/** Caller metadata: string keys to bytes. */
export type Metadata = Readonly<Record<string, Uint8Array>>;
/** An rw patch: a `null` value deletes the key. */
export type MetadataPatch = Readonly<Record<string, Uint8Array | null>>;

/** Largest value accepted, in bytes. */
export const MAX_VALUE_BYTES = 64 * 1024;
/** Most keys accepted in one map. */
export const MAX_KEYS = 256;
const KEY_RE = /^[A-Za-z0-9][A-Za-z0-9._/:-]{0,255}$/;

/** True when `k` is a valid metadata key. */
export const isValidKey = (k: string): boolean => KEY_RE.test(k) && k !== '__proto__';

const isPlainObject = (u: unknown): u is Record<string, unknown> =>
  typeof u === 'object' && u !== null && !Array.isArray(u) && !(u instanceof Uint8Array);

const checkMap = (
  id: string,
  what: string,
  input: unknown,
  allowNull: boolean,
): E.Either<InvalidEntry, Record<string, Uint8Array | null>> => {
  if (input === undefined) return E.right({});
  if (!isPlainObject(input)) return E.left(invalidEntry(`${what} must be an object of byte values`, id, [what]));
  const keys = Object.keys(input);
  if (keys.length > MAX_KEYS)
    return E.left(invalidEntry(`${what} has ${keys.length} keys; at most ${MAX_KEYS} are allowed`, id, [what]));
  const bad: string[] = [];
  const reasons: Record<string, string> = {};
  const out: Record<string, Uint8Array | null> = Object.create(null) as Record<string, Uint8Array | null>;
  for (const k of keys) {
    const v = input[k];
    if (!isValidKey(k)) {
      bad.push(k);
      reasons[k] = 'invalid key syntax';
    } else if (v === null && allowNull) out[k] = null;
    else if (v === null || v === undefined) {
      bad.push(k);
      reasons[k] = 'nil value';
    } else if (!(v instanceof Uint8Array)) {
      bad.push(k);
      reasons[k] = 'value is not bytes';
    } else if (v.byteLength > MAX_VALUE_BYTES) {
      bad.push(k);
      reasons[k] = `value is ${v.byteLength} bytes; at most ${MAX_VALUE_BYTES}`;
    } else out[k] = v;
  }
  if (bad.length > 0)
    return E.left(
      invalidEntry(`invalid ${what} entries: ${bad.map((k) => `${k} (${reasons[k]})`).join(', ')}`, id, bad, {
        reasons,
      }),
    );
  return E.right({ ...out });
};

/** Validates create-time ro/rw: no nil values, key syntax, sizes, and no rw key present in ro. */
export const validateCreateMetadata = (
  id: string,
  ro: unknown,
  rw: unknown,
): E.Either<InvalidEntry | ReadOnlyKey, { ro: Metadata; rw: Metadata }> => {
  const r = checkMap(id, 'ro', ro, false);
  if (E.isLeft(r)) return r;
  const w = checkMap(id, 'rw', rw, false);
  if (E.isLeft(w)) return w;
  const clash = Object.keys(w.right).filter((k) => k in r.right);
  if (clash.length > 0) return E.left(readOnlyKey(id, clash));
  return E.right({ ro: r.right as Metadata, rw: w.right as Metadata });
};

/** Validates an rw patch against the element's ro keys. */
export const validatePatch = (id: string, patch: unknown, ro: Metadata): E.Either<InvalidEntry | ReadOnlyKey, MetadataPatch> => {
  if (patch === undefined || patch === null) return E.left(invalidEntry('an update patch must be an object', id, ['patch']));
  const p = checkMap(id, 'patch', patch, true);
  if (E.isLeft(p)) return p;
  const clash = Object.keys(p.right).filter((k) => k in ro);
  if (clash.length > 0) return E.left(readOnlyKey(id, clash));
  return E.right(p.right);
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
