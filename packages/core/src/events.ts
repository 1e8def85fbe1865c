/**
 * The event stream (DESIGN.md section 5): one total order, published only once durable.
 */
import type { ElementKind } from './id.js';

/** Event types. */
export type EventType = 'created' | 'modified' | 'deleted' | 'bound' | 'unbound' | 'joined' | 'left';
/** All event types. */
export const EVENT_TYPES: readonly EventType[] = ['created', 'modified', 'deleted', 'bound', 'unbound', 'joined', 'left'];

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

/** True when an event matches a filter. */
export const eventMatches = (f: EventFilter, e: LesslEvent): boolean => {
  if (f.types !== undefined && !f.types.includes(e.type)) return false;
  if (f.ids !== undefined && !f.ids.includes(e.id)) return false;
  if (f.kinds !== undefined || f.stores !== undefined) {
    const m = /^([a-z]+):\/\/([^/]*)\//.exec(e.id);
    if (f.kinds !== undefined && !(f.kinds as readonly string[]).includes(m?.[1] ?? '')) return false;
    if (f.stores !== undefined && !f.stores.includes(m?.[2] ?? '')) return false;
  }
  return true;
};
