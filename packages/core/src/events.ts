/**
 * The event stream (docs/events.md): one total order, published only once durable.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidFilterSpec, type InvalidFilterSpec } from './errors.js';
import {
  ELEMENT_KINDS,
  hostKey,
  hostRef,
  isElementId,
  parseId,
  toId,
  type ElementId,
  type ElementKind,
  type HostRef,
  type IdLike,
} from './id.js';
import { boundedArray, own, plainRecord, safeShow, type PlainRecord } from './safe.js';

/**
 * Event types. `host`: a host of a backend with several engines changed state (its `id` is
 * `host://<name>`, its detail `{ state, from, reason }`). `deployed` and `invoked`: a function
 * was deployed (or updated) and invoked (its `id` is `function://<name>`; the detail of
 * `invoked` names the invocation, version, exit code, reason, duration and cold or warm, never
 * input or output bytes); a removed function's event is `deleted` with that id. Every other
 * event concerns an element.
 */
export type EventType =
  'created' | 'modified' | 'deleted' | 'bound' | 'unbound' | 'joined' | 'left' | 'host' | 'deployed' | 'invoked';
/** All event types. */
export const EVENT_TYPES: readonly EventType[] = [
  'created',
  'modified',
  'deleted',
  'bound',
  'unbound',
  'joined',
  'left',
  'host',
  'deployed',
  'invoked',
];

/** The envelope every event has. */
export interface LesslEvent {
  /** Position in the one total order, from 1, without gaps. */
  readonly seq: number;
  /** ISO-8601 time it became durable. */
  readonly time: string;
  readonly type: EventType;
  /** The element concerned; for `host` events, the host. */
  readonly id: ElementId | HostRef;
  /** Its revision after the change (for joined/left/bound/unbound: the executor's). */
  readonly revision: number;
  /** Type-specific detail: e.g. `executor`, `exitCode`, `keys`, `reason`. Never secrets. */
  readonly detail: EventDetail;
}

/** What an event's detail may hold (docs/events.md); a backend may add fields. IDs are `ElementId`s. */
export interface EventDetail extends Readonly<Record<string, unknown>> {
  /** created: the parent element. */
  readonly parent?: ElementId;
  /** joined/left/bound/unbound: the executor of the composition. */
  readonly executor?: ElementId;
  readonly checksum?: string;
  /** modified: the metadata keys changed. */
  readonly keys?: readonly string[];
  /** modified of an executor: its composition changed. */
  readonly composition?: boolean;
  /** unbound of a task: its exit code (null when it did not exit by itself). */
  readonly exitCode?: number | null;
  /** Why a task ended, or why a record was deleted. */
  readonly reason?: string;
  /** bound/unbound of a task: its run number. */
  readonly run?: number;
}

/** The fields of an event's detail that name elements. */
const DETAIL_IDS = ['parent', 'executor'] as const;

/**
 * The JSON form of an event (what the durable log, the service's SSE and JSON lines hold): IDs
 * as strings, in `id` and in the detail.
 */
export interface EventJson {
  readonly seq: number;
  readonly time: string;
  readonly type: EventType;
  readonly id: string;
  readonly revision: number;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** Every `ElementId` in a detail as its string form, other fields as they are. */
const detailToJson = (d: Readonly<Record<string, unknown>>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(d).map(([k, v]) => [k, isElementId(v) ? v.key : v]));

/** An event to its JSON form. */
export const eventToJson = (e: LesslEvent): EventJson => ({
  seq: e.seq,
  time: e.time,
  type: e.type,
  id: e.id.key,
  revision: e.revision,
  detail: detailToJson(e.detail),
});

/** `u` as an ID when it is an ID string or ID object, else `undefined`. */
const asId = (u: unknown): ElementId | undefined => {
  if (typeof u !== 'string' && (typeof u !== 'object' || u === null)) return undefined;
  const r = typeof u === 'string' ? parseId(u) : toId(u);
  return E.isRight(r) ? r.right : undefined;
};

/**
 * The parts of an ID string that is not an element ID (e.g. `host://<name>`), kept as given so
 * that no durable event is lost on read. `undefined` for anything but a string.
 */
const looseId = (u: unknown): ElementId | undefined => {
  if (typeof u !== 'string') return undefined;
  const m = /^([a-z]+):\/\/([^/]*)\/?(.*)$/.exec(u);
  // kept even when its kind is none of ours: a durable event is never dropped on read
  return { kind: (m?.[1] ?? '') as ElementKind, store: m?.[2] ?? '', name: m?.[3] ?? '', key: u };
};

/**
 * An event from its JSON form (or a stored event of an older lessl, whose IDs are strings):
 * `id` and the detail fields naming elements (`parent`, `executor`) become `ElementId`s.
 * Answers `undefined` when `u` is not an event.
 */
export const eventFromJson = (u: unknown): LesslEvent | undefined => {
  if (typeof u !== 'object' || u === null) return undefined;
  const j: Partial<Record<keyof EventJson, unknown>> = u;
  const id =
    asId(j.id) ??
    (typeof j.id === 'string' && j.id.startsWith(hostKey('')) ? hostRef(j.id.slice(hostKey('').length)) : looseId(j.id));
  if (id === undefined || typeof j.seq !== 'number' || typeof j.type !== 'string' || typeof j.revision !== 'number')
    return undefined;
  const raw: Partial<Record<string, unknown>> = typeof j.detail === 'object' && j.detail !== null ? j.detail : {};
  const detail: Record<string, unknown> = { ...raw };
  for (const k of DETAIL_IDS) {
    const v = asId(raw[k]);
    if (v !== undefined) detail[k] = v;
  }
  return {
    seq: j.seq,
    time: typeof j.time === 'string' ? j.time : '',
    type: j.type as EventType,
    id,
    revision: j.revision,
    detail,
  };
};

/** Which events to deliver: every given criterion must match. */
export interface EventFilter {
  readonly types?: readonly EventType[];
  readonly kinds?: readonly ElementKind[];
  /** Exact element IDs, as strings or `ElementId`s. */
  readonly ids?: readonly IdLike[];
  /** Events of elements in these stores, by store name. */
  readonly stores?: readonly string[];
}

/** Options of `stream`. */
export interface StreamOptions {
  /** Replay from the log every event with `seq > since`, then go live without gap or duplicate. */
  readonly since?: number;
  readonly signal?: AbortSignal;
  /** Bound of the queue between producer and consumer (default 1024). */
  readonly highWaterMark?: number;
  /** When the queue is full: end the stream with an error, or drop the oldest (counted in `dropped`). */
  readonly overflow?: 'error' | 'drop-oldest';
}

/** A bounded async iterable of events. */
export interface EventStream extends AsyncIterable<LesslEvent> {
  /** Events dropped by the `drop-oldest` policy so far. */
  readonly dropped: number;
  /** Ends the stream. */
  close(): void;
}

/** Removes a subscription. */
export type Unsubscribe = () => void;

/** The event contract. */
export interface EventSource {
  /** Synchronous fan-out; a throwing handler does not stop the others. */
  subscribe(filter: EventFilter, handler: (e: LesslEvent) => void): Unsubscribe;
  /** An async iterable; errors (bad options, overflow) reject `next()` with a `LesslError`. */
  stream(filter: EventFilter, opts?: StreamOptions): EventStream;
  /** The seq of the last durable event (0 when none). */
  lastSeq(): number;
}

const EVENT_FILTER_FIELDS: Readonly<Record<keyof EventFilter, readonly string[] | undefined>> = {
  types: EVENT_TYPES,
  kinds: ELEMENT_KINDS,
  ids: undefined,
  stores: undefined,
};

/** Why field `k` of filter snapshot `f` is invalid, or `undefined`. `allowed` lists its values, if limited. */
const badField = (f: PlainRecord, k: string, allowed: readonly string[] | undefined): string | undefined => {
  const v = own(f, k);
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) return `${k} must be an array of strings`;
  const bad = v.filter((x) => typeof x !== 'string' || (allowed !== undefined && !allowed.includes(x)));
  return bad.length > 0 ? `invalid ${k}: ${bad.map(safeShow).join(', ')}` : undefined;
};

/** `ids` of a filter snapshot with every `ElementId` as its key; `undefined` when some entry is neither. */
const idKeys = (v: unknown): unknown => {
  if (!Array.isArray(v)) return v;
  const out: unknown[] = [];
  const entries: readonly unknown[] = v;
  for (const x of entries) {
    if (typeof x === 'string') out.push(x);
    else if (isElementId(x)) out.push(x.key);
    else return undefined;
  }
  return out;
};

/**
 * Validates an event filter: `types`, `kinds`, `ids` and `stores` are each absent or an array
 * of strings (`types` and `kinds` of known values); `null` (as JSON has it) and other fields are
 * refused. Never throws. The answer is a copy with fresh arrays, so later changes to (or traps
 * in) the object passed in cannot affect the subscription.
 */
export const validateEventFilter = (u: unknown): E.Either<InvalidFilterSpec, EventFilter> => {
  if (u === undefined) return E.right({});
  const c = plainRecord(u);
  if (E.isLeft(c)) return E.left(invalidFilterSpec('', `an event filter ${c.left}`));
  const extra = Object.keys(c.right).filter((k) => !Object.hasOwn(EVENT_FILTER_FIELDS, k));
  if (extra.length > 0) return E.left(invalidFilterSpec('', `unknown fields: ${extra.join(', ')}`));
  const snap: PlainRecord = { ...c.right };
  const ids = own(snap, 'ids');
  if (ids !== undefined) {
    const keys = idKeys(ids);
    if (keys === undefined) return E.left(invalidFilterSpec('', 'ids must be an array of element IDs (strings or ElementIds)'));
    snap.ids = keys;
  }
  for (const [k, allowed] of Object.entries(EVENT_FILTER_FIELDS)) {
    const bad = badField(snap, k, allowed);
    if (bad !== undefined) return E.left(invalidFilterSpec('', bad));
  }
  return E.right(snap as EventFilter);
};

/** True when `list` is absent or holds `v`. A list that is not a (bounded) array holds nothing. */
const matchesIn = (list: unknown, v: unknown): boolean => list === undefined || (boundedArray(list)?.includes(v) ?? false);

/**
 * True when an event matches a filter checked by `validateEventFilter` (its `ids` are strings).
 * Never throws (false on unreadable input) and never wedges.
 */
export const eventMatches = (f: EventFilter, e: LesslEvent): boolean => {
  try {
    const { types, ids, kinds, stores } = f;
    const { type } = e;
    const raw: unknown = e.id;
    const id = typeof raw === 'string' ? raw : isElementId(raw) ? raw.key : undefined;
    if (!matchesIn(types, type) || !matchesIn(ids, id)) return false;
    if (kinds === undefined && stores === undefined) return true;
    const m = typeof id === 'string' ? /^([a-z]+):\/\/([^/]*)\//.exec(id) : null;
    return matchesIn(kinds, m?.[1] ?? '') && matchesIn(stores, m?.[2] ?? '');
  } catch {
    return false;
  }
};
