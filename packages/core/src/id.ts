/**
 * Element IDs: `<kind>://<store>/<name>`, e.g. `image://local/busybox`.
 * Parsed once at the edge; inside lessl only the parsed form travels.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, type InvalidEntry } from './errors.js';
import { safeShow } from './safe.js';

/** The four kinds of element lessl manages. */
export const ELEMENT_KINDS = ['image', 'volume', 'task', 'executor'] as const;
/** One of `image | volume | task | executor`. */
export type ElementKind = (typeof ELEMENT_KINDS)[number];

/**
 * A parsed element ID. `key` is the canonical string form. Every ID lessl hands out, in
 * elements, results and events, is one of these (docs/api-style.md); an ID lessl made also
 * serialises to its `key` with `JSON.stringify` and `String()` (non-enumerable `toJSON` and
 * `toString`), so an element or event written as JSON shows IDs as their string form.
 */
export interface ElementId {
  readonly kind: ElementKind;
  readonly store: string;
  readonly name: string;
  readonly key: string;
}

/** A store address: `<kind>://<store>`. */
export interface StoreRef {
  readonly kind: ElementKind;
  readonly store: string;
}

const STORE_RE = /^[a-z0-9](?:[a-z0-9._-]{0,62})$/;
const NAME_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9._\-/:@]{0,253})$/;

/** True when `k` is an element kind. */
export const isElementKind = (k: unknown): k is ElementKind => typeof k === 'string' && ELEMENT_KINDS.some((x) => x === k);

/** Renders an ID (or its parts) as `<kind>://<store>/<name>`. */
export const formatId = (id: Pick<ElementId, 'kind' | 'store' | 'name'>): string => `${id.kind}://${id.store}/${id.name}`;

/** Renders a store address as `<kind>://<store>`. */
export const formatStore = (s: StoreRef): string => `${s.kind}://${s.store}`;

/**
 * Builds an ID from its parts, validating each.
 * @example makeId('image', 'local', 'busybox') // Right({ key: 'image://local/busybox', ... })
 */
export const makeId = (kind: unknown, store: unknown, name: unknown): E.Either<InvalidEntry, ElementId> => {
  if (typeof kind !== 'string' || typeof store !== 'string' || typeof name !== 'string')
    return E.left(invalidEntry('the parts of an element ID must be strings', '', ['id']));
  const raw = `${kind}://${store}/${name}`;
  if (!isElementKind(kind)) return E.left(invalidEntry(`unknown element kind "${kind}" in ID`, raw, ['id'], { kind }));
  if (!STORE_RE.test(store)) return E.left(invalidEntry(`invalid store name "${store}" in ID`, raw, ['id'], { store }));
  if (!NAME_RE.test(name) || name.includes('..') || name.endsWith('/') || name.includes('//'))
    return E.left(invalidEntry(`invalid element name "${name}" in ID`, raw, ['id'], { name }));
  return E.right(withJson({ kind, store, name, key: raw }));
};

/**
 * Gives an ID non-enumerable `toJSON` and `toString` answering its key, so `JSON.stringify` and
 * template strings show `kind://store/name` (deep equality and spreading ignore them).
 */
const withJson = (id: ElementId): ElementId =>
  Object.defineProperties(id, {
    toJSON: { value: idToJson, enumerable: false, writable: false, configurable: false },
    toString: { value: idToJson, enumerable: false, writable: false, configurable: false },
  });
function idToJson(this: ElementId): string {
  return this.key;
}

/**
 * Parses `<kind>://<store>/<name>`. Never throws: anything else is `InvalidEntry`.
 * @example parseId('volume://nfs1/home') // Right({ kind: 'volume', store: 'nfs1', name: 'home', ... })
 */
export const parseId = (input: unknown): E.Either<InvalidEntry, ElementId> => {
  if (typeof input !== 'string') return E.left(invalidEntry('an element ID must be a string', safeShow(input), ['id']));
  const m = /^([a-z]+):\/\/([^/]*)\/(.*)$/.exec(input);
  if (m === null) return E.left(invalidEntry(`malformed element ID "${input}": expected <kind>://<store>/<name>`, input, ['id']));
  return makeId(m[1] ?? '', m[2] ?? '', m[3] ?? '');
};

/** Parses a store address `<kind>://<store>`. */
export const parseStoreRef = (input: unknown): E.Either<InvalidEntry, StoreRef> => {
  if (typeof input !== 'string') return E.left(invalidEntry('a store address must be a string', '', ['store']));
  const m = /^([a-z]+):\/\/([^/]+)\/?$/.exec(input);
  if (m === null || !isElementKind(m[1]) || !STORE_RE.test(m[2] ?? ''))
    return E.left(invalidEntry(`malformed store address "${input}": expected <kind>://<store>`, input, ['store']));
  return E.right({ kind: m[1], store: m[2] ?? '' });
};

/** `u.key`, or `undefined` when `u` has none or reading it throws. */
const ownKey = (u: unknown): unknown => {
  if ((typeof u !== 'object' && typeof u !== 'function') || u === null) return undefined;
  try {
    return 'key' in u ? u.key : undefined;
  } catch {
    return undefined;
  }
};

const partsOf = (u: unknown): readonly unknown[] | undefined => {
  if (typeof u !== 'object' || u === null) return undefined;
  try {
    const p: Partial<Record<'kind' | 'store' | 'name', unknown>> = u;
    return [p.kind, p.store, p.name];
  } catch {
    return undefined;
  }
};

/**
 * True when `u` is an already-parsed element ID: its `key` parses, and its `kind`, `store`
 * and `name` agree with it (so an object cannot pose as one ID and name another). Never throws.
 */
export const isElementId = (u: unknown): u is ElementId => {
  const p = parseId(ownKey(u));
  if (E.isLeft(p)) return false;
  const parts = partsOf(u);
  return parts !== undefined && parts[0] === p.right.kind && parts[1] === p.right.store && parts[2] === p.right.name;
};

/**
 * io-ts codec: decodes the string form (or an ID object, as a value written by an older lessl or
 * copied by spreading may hold) to an `ElementId`, encodes back to the string.
 */
export const ElementIdC = new t.Type<ElementId, string, unknown>(
  'ElementId',
  isElementId,
  (u, c) => {
    const r = typeof u === 'string' ? parseId(u) : toId(u);
    return E.isRight(r) ? t.success(r.right) : t.failure(u, c, r.left.message);
  },
  (id) => id.key,
);

/** Accepts either a string or a parsed ID, so callers can pass what they have. */
export type IdLike = string | ElementId;

/**
 * Normalizes an `IdLike` into a parsed ID. Never throws: anything but an ID string or an object
 * whose `key` is one (`null`, `undefined`, numbers, hostile objects) is `InvalidEntry`. The
 * answer is always a fresh ID parsed from the key, never the object passed in.
 */
export const toId = (id: unknown): E.Either<InvalidEntry, ElementId> => {
  const key = typeof id === 'string' ? id : ownKey(id);
  return parseId(key === undefined ? id : key);
};

/** The string form of an `IdLike` (its `key`, or the string itself), unchecked. Never throws. */
export const idKey = (id: IdLike): string => describeId(id);

/** A printable form of whatever was passed as an ID, for error messages. Never throws. */
export const describeId = (u: unknown): string => {
  if (typeof u === 'string') return u;
  const k = ownKey(u);
  return typeof k === 'string' ? k : '';
};

/**
 * The key of an element from trusted parts (a store lessl configured, a name lessl made):
 * `<kind>://<store>/<name>`. Use `makeId` for parts a caller gave.
 */
export const keyOf = (kind: ElementKind, store: string, name: string): string => formatId({ kind, store, name });

/**
 * The key prefix that lists elements: of a kind (`task://`), of a store (`task://local/`), or of
 * names starting with `namePrefix` in that store (`task://local/job-1.`).
 */
export const keyPrefix = (kind: ElementKind, store?: string, namePrefix = ''): string =>
  store === undefined ? `${kind}://` : `${kind}://${store}/${namePrefix}`;

/** The kind of a key (undefined when it is not an element key). */
export const kindOfKey = (key: string): ElementKind | undefined => {
  const kind = key.slice(0, Math.max(0, key.indexOf('://')));
  return isElementKind(kind) ? kind : undefined;
};

/** The rule an element name follows (1 to 254 characters, no `..`, `//` or trailing `/`). */
export const isValidName = (name: unknown): name is string =>
  typeof name === 'string' && NAME_RE.test(name) && !name.includes('..') && !name.endsWith('/') && !name.includes('//');

/** A host's key, as events and errors name it: `host://<name>` (hosts are not elements; see `HostRef`). */
export const hostKey = (name: string): string => `host://${name}`;

/** The host a `host` event concerns: `host://<name>` (not an element: hosts live in the backend). */
export interface HostRef {
  readonly kind: 'host';
  readonly store: '';
  readonly name: string;
  readonly key: string;
}

/** A function's key, as its events name it: `function://<name>` (functions are not elements). */
export const functionKey = (name: string): string => `function://${name}`;

/** A host's reference (see `HostRef`), serialising to its key like an `ElementId`. */
export const hostRef = (name: string): HostRef => {
  const key = hostKey(name);
  const ref: HostRef = { kind: 'host', store: '', name, key };
  return Object.defineProperties(ref, {
    toJSON: { value: () => key, enumerable: false },
    toString: { value: () => key, enumerable: false },
  });
};
