/**
 * Filter specs: which parts of an element `read` returns, and which elements `list` returns.
 * A malformed spec is `InvalidFilterSpec`, never a throw.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidFilterSpec, showValue, type InvalidFilterSpec } from './errors.js';
import { isElementKind, parseId, type ElementKind } from './id.js';
import { isValidKey, type Metadata } from './metadata.js';
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
  /** Direct children of this parent ID. */
  readonly parent?: string;
  /** Name starts with this prefix. */
  readonly namePrefix?: string;
  /** ro metadata equality (UTF-8 string compare of the bytes). */
  readonly ro?: Readonly<Record<string, string>>;
  /** rw metadata equality. */
  readonly rw?: Readonly<Record<string, string>>;
  /** At most this many, in ID order. */
  readonly limit?: number;
}

const isObj = (u: unknown): u is Record<string, unknown> => typeof u === 'object' && u !== null && !Array.isArray(u);

const checkRead = (id: string, f: Record<string, unknown>): InvalidFilterSpec | undefined => {
  if (f.parts !== undefined) {
    if (!Array.isArray(f.parts)) return invalidFilterSpec(id, 'parts must be an array');
    const bad = f.parts.filter((p) => !(PARTS as readonly unknown[]).includes(p));
    if (bad.length > 0) return invalidFilterSpec(id, `unknown parts: ${bad.map(showValue).join(', ')}`);
  }
  if (f.keys !== undefined) {
    if (!Array.isArray(f.keys)) return invalidFilterSpec(id, 'keys must be an array of strings');
    const bad = f.keys.filter((k) => typeof k !== 'string' || !isValidKey(k));
    if (bad.length > 0) return invalidFilterSpec(id, `invalid keys: ${bad.map(showValue).join(', ')}`);
  }
  return undefined;
};

const READ_FIELDS = ['parts', 'keys'];
const LIST_FIELDS = [...READ_FIELDS, 'kind', 'store', 'parent', 'namePrefix', 'ro', 'rw', 'limit'];

const unknownFields = (f: Record<string, unknown>, allowed: readonly string[]): string[] =>
  Object.keys(f).filter((k) => !allowed.includes(k));

/** Validates a read filter. */
export const validateReadFilter = (id: string, f: unknown): E.Either<InvalidFilterSpec, ReadFilter> => {
  if (f === undefined) return E.right({});
  if (!isObj(f)) return E.left(invalidFilterSpec(id, 'a filter spec must be an object'));
  const extra = unknownFields(f, READ_FIELDS);
  if (extra.length > 0) return E.left(invalidFilterSpec(id, `unknown fields: ${extra.join(', ')}`));
  const err = checkRead(id, f);
  return err === undefined ? E.right(f as ReadFilter) : E.left(err);
};

const checkEq = (what: string, u: unknown): string | undefined => {
  if (u === undefined) return undefined;
  if (!isObj(u)) return `${what} must be an object of strings`;
  for (const [k, v] of Object.entries(u)) {
    if (!isValidKey(k)) return `${what} key "${k}" is invalid`;
    if (typeof v !== 'string') return `${what}.${k} must be a string`;
  }
  return undefined;
};

/** Validates a list filter. */
export const validateListFilter = (f: unknown): E.Either<InvalidFilterSpec, ListFilter> => {
  if (f === undefined) return E.right({});
  if (!isObj(f)) return E.left(invalidFilterSpec('', 'a filter spec must be an object'));
  const extra = unknownFields(f, LIST_FIELDS);
  if (extra.length > 0) return E.left(invalidFilterSpec('', `unknown fields: ${extra.join(', ')}`));
  const err = checkRead('', f);
  if (err !== undefined) return E.left(err);
  if (f.kind !== undefined && !isElementKind(f.kind)) return E.left(invalidFilterSpec('', `unknown kind ${showValue(f.kind)}`));
  if (f.store !== undefined && typeof f.store !== 'string') return E.left(invalidFilterSpec('', 'store must be a string'));
  if (f.namePrefix !== undefined && typeof f.namePrefix !== 'string')
    return E.left(invalidFilterSpec('', 'namePrefix must be a string'));
  if (f.parent !== undefined && E.isLeft(parseId(f.parent)))
    return E.left(invalidFilterSpec('', `parent is not an element ID: ${showValue(f.parent)}`));
  if (f.limit !== undefined && (typeof f.limit !== 'number' || !Number.isInteger(f.limit) || f.limit < 0))
    return E.left(invalidFilterSpec('', 'limit must be a non-negative integer'));
  const eq = checkEq('ro', f.ro) ?? checkEq('rw', f.rw);
  return eq === undefined ? E.right(f as ListFilter) : E.left(invalidFilterSpec('', eq));
};

const dec = new TextDecoder();
const pick = (m: Metadata, keys: readonly string[] | undefined): Metadata => {
  if (keys === undefined) return m;
  const out: Record<string, Uint8Array> = {};
  for (const k of keys) if (k in m) out[k] = m[k] as Uint8Array;
  return out;
};

/** Projects an element through a (valid) read filter. */
export const project = (e: Element, f: ReadFilter): Element => {
  if (f.parts === undefined && f.keys === undefined) return e;
  const parts = f.parts ?? PARTS;
  return {
    ...e,
    ro: parts.includes('ro') ? pick(e.ro, f.keys) : {},
    rw: parts.includes('rw') ? pick(e.rw, f.keys) : {},
    attributes: parts.includes('attributes') ? e.attributes : {},
  };
};

const eqMatch = (m: Metadata, want: Readonly<Record<string, string>> | undefined): boolean => {
  if (want === undefined) return true;
  for (const [k, v] of Object.entries(want)) {
    const got = m[k];
    if (got === undefined || dec.decode(got) !== v) return false;
  }
  return true;
};

/** True when an element matches a (valid) list filter's criteria. */
export const matches = (e: Element, f: ListFilter): boolean =>
  (f.kind === undefined || e.id.kind === f.kind) &&
  (f.store === undefined || e.id.store === f.store) &&
  (f.parent === undefined || e.parent?.key === f.parent) &&
  (f.namePrefix === undefined || e.id.name.startsWith(f.namePrefix)) &&
  eqMatch(e.ro, f.ro) &&
  eqMatch(e.rw, f.rw);
