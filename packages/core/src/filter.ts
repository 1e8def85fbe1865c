/**
 * Filter specs: which parts of an element `read` returns, and which elements `list` returns.
 * A malformed spec is `InvalidFilterSpec`, never a throw.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidFilterSpec, type InvalidFilterSpec } from './errors.js';
import { isElementKind, toId, type ElementKind, type IdLike } from './id.js';
import { isValidKey, type Metadata } from './metadata.js';
import { boundedArray, isBytes, isRecordLike, own, plainRecord, safeShow, type PlainRecord } from './safe.js';
import type { Element } from './element.js';

/** Parts of an element a read can select. `id`, `revision`, times and `parent` always come. */
export type ElementPart = 'ro' | 'rw' | 'attributes';
const PARTS: readonly ElementPart[] = ['ro', 'rw', 'attributes'];

/** What `read` returns: all parts by default; `keys` limits ro/rw to those keys. */
export interface ReadFilter {
  readonly parts?: readonly ElementPart[];
  readonly keys?: readonly string[];
}

/** What `list` returns: elements matching every given criterion, then projected like `read`. */
export interface ListFilter extends ReadFilter {
  readonly kind?: ElementKind;
  readonly store?: string;
  /** Direct children of this parent ID (a string or an `ElementId`). */
  readonly parent?: IdLike;
  /** Name starts with this prefix. */
  readonly namePrefix?: string;
  /** ro metadata equality (UTF-8 string compare of the bytes). */
  readonly ro?: Readonly<Record<string, string>>;
  /** rw metadata equality. */
  readonly rw?: Readonly<Record<string, string>>;
  /** At most this many, in ID order. */
  readonly limit?: number;
}

const checkRead = (id: string, f: PlainRecord): InvalidFilterSpec | undefined => {
  const parts = own(f, 'parts');
  if (parts !== undefined) {
    if (!Array.isArray(parts)) return invalidFilterSpec(id, 'parts must be an array');
    const bad = parts.filter((p) => !PARTS.some((x) => x === p));
    if (bad.length > 0) return invalidFilterSpec(id, `unknown parts: ${bad.map(safeShow).join(', ')}`);
  }
  const keys = own(f, 'keys');
  if (keys !== undefined) {
    if (!Array.isArray(keys)) return invalidFilterSpec(id, 'keys must be an array of strings');
    const bad = keys.filter((k) => !isValidKey(k));
    if (bad.length > 0) return invalidFilterSpec(id, `invalid keys: ${bad.map(safeShow).join(', ')}`);
  }
  return undefined;
};

const READ_FIELDS = ['parts', 'keys'];
const LIST_FIELDS = [...READ_FIELDS, 'kind', 'store', 'parent', 'namePrefix', 'ro', 'rw', 'limit'];

/**
 * A plain copy of filter spec `f` (read once, so later reads cannot see other values), with
 * only `allowed` fields; or why not.
 */
const snapshot = (id: string, f: unknown, allowed: readonly string[]): E.Either<InvalidFilterSpec, PlainRecord> => {
  const c = plainRecord(f);
  if (E.isLeft(c)) return E.left(invalidFilterSpec(id, `a filter spec ${c.left}`));
  const extra = Object.keys(c.right).filter((k) => !allowed.includes(k));
  return extra.length > 0 ? E.left(invalidFilterSpec(id, `unknown fields: ${extra.join(', ')}`)) : c;
};

/**
 * Validates a read filter. Never throws: anything but a valid spec is `InvalidFilterSpec`.
 * The answer is a copy of the spec, independent of the object passed in.
 */
export const validateReadFilter = (id: string, f: unknown): E.Either<InvalidFilterSpec, ReadFilter> => {
  const sid = typeof id === 'string' ? id : safeShow(id);
  if (f === undefined) return E.right({});
  const s = snapshot(sid, f, READ_FIELDS);
  if (E.isLeft(s)) return s;
  const err = checkRead(sid, s.right);
  return err === undefined ? E.right(s.right as ReadFilter) : E.left(err);
};

const checkEq = (what: string, u: unknown): string | undefined => {
  if (u === undefined) return undefined;
  if (!isRecordLike(u)) return `${what} must be an object of strings`;
  for (const [k, v] of Object.entries(u)) {
    if (!isValidKey(k)) return `${what} key "${k}" is invalid`;
    if (typeof v !== 'string') return `${what}.${k} must be a string`;
  }
  return undefined;
};

const isLimit = (u: unknown): boolean => typeof u === 'number' && Number.isInteger(u) && u >= 0;

/** Why the list-only fields of snapshot `f` are invalid, or `undefined`. */
const checkList = (f: PlainRecord): string | undefined => {
  const [kind, store, namePrefix, parent, limit] = ['kind', 'store', 'namePrefix', 'parent', 'limit'].map((k) => own(f, k));
  if (kind !== undefined && !isElementKind(kind)) return `unknown kind ${safeShow(kind)}`;
  if (store !== undefined && typeof store !== 'string') return 'store must be a string';
  if (namePrefix !== undefined && typeof namePrefix !== 'string') return 'namePrefix must be a string';
  if (parent !== undefined && E.isLeft(toId(parent))) return `parent is not an element ID: ${safeShow(parent)}`;
  if (limit !== undefined && !isLimit(limit)) return 'limit must be a non-negative integer';
  return checkEq('ro', own(f, 'ro')) ?? checkEq('rw', own(f, 'rw'));
};

/**
 * Validates a list filter. Never throws: anything but a valid spec is `InvalidFilterSpec`.
 * The answer is a copy of the spec, independent of the object passed in.
 */
export const validateListFilter = (f: unknown): E.Either<InvalidFilterSpec, ListFilter> => {
  if (f === undefined) return E.right({});
  const s = snapshot('', f, LIST_FIELDS);
  if (E.isLeft(s)) return s;
  const err = checkRead('', s.right);
  if (err !== undefined) return E.left(err);
  const bad = checkList(s.right);
  if (bad !== undefined) return E.left(invalidFilterSpec('', bad));
  const parent = own(s.right, 'parent');
  // the copy names the parent by its key, so matching compares strings
  return E.right((parent === undefined ? s.right : { ...s.right, parent: keyOf(parent) }) as ListFilter);
};

/** The key of a valid parent criterion. */
const keyOf = (u: unknown): string => {
  const r = toId(u);
  return E.isRight(r) ? r.right.key : '';
};

const dec = new TextDecoder();

/** The entries of `m` under `keys` that `m` has as its own (never `toString` and the like). */
const pick = (m: Metadata, keys: readonly unknown[] | undefined): Metadata => {
  if (keys === undefined) return m;
  const has = (k: unknown): k is string => typeof k === 'string' && Object.hasOwn(m, k);
  return Object.fromEntries(
    keys.filter(has).flatMap((k) => {
      const v = m[k];
      return v === undefined ? [] : [[k, v]];
    }),
  );
};

/** The projection that selects nothing beyond the fields that always come. */
const nothing = (e: Element): Element => {
  try {
    return isRecordLike(e) ? { ...e, ro: {}, rw: {}, attributes: {} } : e;
  } catch {
    return e;
  }
};

/** `u` as a bounded array, `PARTS` when absent; `undefined` when it is neither. */
const partsOf = (u: unknown): readonly unknown[] | undefined => (u === undefined ? PARTS : boundedArray(u));

/**
 * Projects an element through a (valid) read filter. Never throws and never wedges: on input
 * it cannot use it answers the element with no ro, rw or attributes (or, failing that, `e`).
 */
export const project = (e: Element, f: ReadFilter): Element => {
  try {
    const { parts: given, keys: wanted } = f;
    if (given === undefined && wanted === undefined) return e;
    const parts = partsOf(given);
    const keys = wanted === undefined ? undefined : boundedArray(wanted);
    if (parts === undefined || (wanted !== undefined && keys === undefined) || !isRecordLike(e)) return nothing(e);
    return {
      ...e,
      ro: parts.includes('ro') ? pick(e.ro, keys) : {},
      rw: parts.includes('rw') ? pick(e.rw, keys) : {},
      attributes: parts.includes('attributes') ? e.attributes : {},
    };
  } catch {
    return nothing(e);
  }
};

const eqMatch = (m: Metadata, want: Readonly<Record<string, string>> | undefined): boolean => {
  if (want === undefined) return true;
  if (!isRecordLike(want)) return false;
  for (const [k, v] of Object.entries(want)) {
    const got = Object.hasOwn(m, k) ? m[k] : undefined;
    if (!isBytes(got) || dec.decode(got) !== v) return false;
  }
  return true;
};

const startsWith = (name: unknown, prefix: unknown): boolean =>
  typeof name === 'string' && typeof prefix === 'string' && name.startsWith(prefix);

/**
 * True when an element matches a (valid) list filter's criteria. Never throws (false on
 * unreadable input) and never wedges.
 */
export const matches = (e: Element, f: ListFilter): boolean => {
  try {
    const { kind, store, parent, namePrefix, ro, rw } = f;
    return (
      (kind === undefined || e.id.kind === kind) &&
      (store === undefined || e.id.store === store) &&
      (parent === undefined || e.parent?.key === (typeof parent === 'string' ? parent : parent.key)) &&
      (namePrefix === undefined || startsWith(e.id.name, namePrefix)) &&
      eqMatch(e.ro, ro) &&
      eqMatch(e.rw, rw)
    );
  } catch {
    return false;
  }
};
