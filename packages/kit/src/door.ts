/**
 * The one door through which a backend's own code (watchers, refresh, housekeeping) changes
 * records outside a store or composer call. It never writes a record or an event any other way.
 */
import type { Element, EventType } from '@lessl/core';
import type { EventDraft } from './records.js';
import type { RegistryPort, RegistryReads } from './port.js';

/** Attributes of an element, as `amend` answers them. */
export type Attributes = Readonly<Record<string, unknown>>;

/** An event `amend` publishes with a change: its type and detail (the ID and revision are the element's). */
export interface AmendEvent {
  readonly type: Extract<EventType, 'modified'>;
  readonly detail?: Readonly<Record<string, unknown>>;
}

/**
 * Writes the held element's attributes: without `event` the revision stays, with it the revision
 * goes up and the event goes in the same write. Answers the element as written.
 */
export type AttributeWrite = (attributes: Attributes, event?: AmendEvent) => Promise<Element>;

/** Reads, and the writes a backend may make on its own. */
export interface RecordDoor extends RegistryReads {
  /**
   * Changes an element's attributes under its lock: `change` gets the element as it is now and
   * answers its new attributes, or `undefined` to leave it. Without `event` the revision stays
   * (bookkeeping, e.g. `lastUsed`); with it the revision goes up and the event is published in
   * the same write. Answers the element as written, or undefined when it is gone or unchanged.
   */
  amend(id: string, change: (current: Element) => Attributes | undefined, event?: AmendEvent): Promise<Element | undefined>;
  /**
   * Holds an element's lock while `fn` runs: `fn` gets the element as it is (undefined when it is
   * gone) and a `write` for its attributes, and may do backend work between the read and the
   * write (e.g. tag an image). With `wait: false` nothing waits: when the lock is taken, `fn` does
   * not run and `hold` answers undefined.
   */
  hold<A>(
    id: string,
    fn: (current: Element | undefined, write: AttributeWrite) => Promise<A>,
    opts?: { readonly wait?: boolean },
  ): Promise<A | undefined>;
  /** Forgets an element whose backend object vanished: its record (and composition) go, with a `deleted` event. */
  forget(id: string, reason: string): Promise<void>;
  /** Publishes an event about something that is not an element (e.g. a host's state change). */
  announce(event: EventDraft): Promise<void>;
}

/** The write of `hold`, for the element as it was read (the caller holds its lock). */
const writer =
  (port: RegistryPort, cur: Element): AttributeWrite =>
  async (attributes, event) => {
    const next: Element =
      event === undefined
        ? { ...cur, attributes }
        : { ...cur, attributes, revision: cur.revision + 1, modified: new Date().toISOString() };
    const events =
      event === undefined
        ? []
        : [
            {
              type: event.type,
              id: cur.id.key,
              revision: next.revision,
              ...(event.detail === undefined ? {} : { detail: event.detail }),
            },
          ];
    await port.commit({ put: [next], events });
    return next;
  };

/** `RecordDoor.hold` over a port. */
const holder =
  (port: RegistryPort): RecordDoor['hold'] =>
  (id, fn, opts) => {
    const run = async () => {
      const cur = port.get(id);
      return fn(cur, cur === undefined ? () => Promise.reject(new Error(`${id} is gone`)) : writer(port, cur));
    };
    return opts?.wait === false ? port.locks.tryWith([id], run) : port.locks.with([id], run);
  };

/** The door over a registry port. */
export const recordDoor = (port: RegistryPort): RecordDoor => {
  const hold = holder(port);
  const amend: RecordDoor['amend'] = async (id, change, event) =>
    (await hold(id, async (cur, write) => {
      const attributes = cur === undefined ? undefined : change(cur);
      return attributes === undefined ? undefined : write(attributes, event);
    })) ?? undefined;
  const forget: RecordDoor['forget'] = (id, reason) =>
    port.locks.with([id], async () => {
      const el = port.get(id);
      if (el === undefined) return;
      await port.commit({
        del: [id],
        ...(port.composition(id) === undefined ? {} : { delComposition: [id] }),
        events: [{ type: 'deleted', id, revision: el.revision, detail: { reason } }],
      });
    });
  return {
    get instanceId() {
      return port.instanceId;
    },
    get: (id) => port.get(id),
    all: () => port.all(),
    scan: (prefix, limit, pred) => port.scan(prefix, limit, pred),
    hasIntent: (id) => port.hasIntent(id),
    childrenOf: (id) => port.childrenOf(id),
    usersOf: (id) => port.usersOf(id),
    composition: (executor) => port.composition(executor),
    functions: () => port.functions(),
    pendingIntents: () => port.pendingIntents(),
    lastSeq: () => port.lastSeq(),
    readOutput: (task, run, from) => port.readOutput(task, run, from),
    amend,
    hold,
    forget,
    announce: async (event) => {
      await port.commit({ events: [event] });
    },
  };
};
