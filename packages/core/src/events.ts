/**
 * The event stream (DESIGN.md section 5): one total order, published only once durable.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidFilterSpec, type InvalidFilterSpec } from './errors.js';
import { ELEMENT_KINDS, type ElementKind } from './id.js';
import { boundedArray, own, plainRecord, safeShow, type PlainRecord } from './safe.js';

/**
 * Event types. `host`: a host of a backend with several engines changed state (its `id` is
 * `host://<name>`, its detail `{ state, from, reason }`); every other type concerns an element.
 */
export type EventType = 'created' | 'modified' | 'deleted' | 'bound' | 'unbound' | 'joined' | 'left' | 'host';
/** All event types. */
export const EVENT_TYPES: readonly EventType[] = ['created', 'modified', 'deleted', 'bound', 'unbound', 'joined', 'left', 'host'];

/** The envelope every event has. */
export interface LesslEvent {
  /** Position in the one total order, from 1, without gaps. */
  readonly seq: number;
  /** ISO-8601 time it became durable. */
  readonly time: string;
  readonly type: EventType;
  /** The element concerned. */
  readonly id: string;
  /** Its revision after the change (for joined/left/bound/unbound: the executor's). */
  readonly revision: number;
  /** Type-specific detail: e.g. `executor`, `exitCode`, `keys`, `source`. Never secrets. */
  readonly detail: Readonly<Record<string, unknown>>;
}

/** Which events to deliver: every given criterion must match. */
export interface EventFilter {
  readonly types?: readonly EventType[];
  readonly kinds?: readonly ElementKind[];
  /** Exact element IDs. */
  readonly ids?: readonly string[];
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
  for (const [k, allowed] of Object.entries(EVENT_FILTER_FIELDS)) {
    const bad = badField(c.right, k, allowed);
    if (bad !== undefined) return E.left(invalidFilterSpec('', bad));
  }
  return E.right(c.right as EventFilter);
};

/** True when `list` is absent or holds `v`. A list that is not a (bounded) array holds nothing. */
const matchesIn = (list: unknown, v: unknown): boolean => list === undefined || (boundedArray(list)?.includes(v) ?? false);

/** True when an event matches a (valid) filter. Never throws (false on unreadable input) and never wedges. */
export const eventMatches = (f: EventFilter, e: LesslEvent): boolean => {
  try {
    const { types, ids, kinds, stores } = f;
    const { type, id } = e;
    if (!matchesIn(types, type) || !matchesIn(ids, id)) return false;
    if (kinds === undefined && stores === undefined) return true;
    const m = typeof id === 'string' ? /^([a-z]+):\/\/([^/]*)\//.exec(id) : null;
    return matchesIn(kinds, m?.[1] ?? '') && matchesIn(stores, m?.[2] ?? '');
  } catch {
    return false;
  }
};
