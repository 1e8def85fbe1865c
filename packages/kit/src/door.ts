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

/** Reads, and the three writes a backend may make on its own. */
export interface RecordDoor extends RegistryReads {
  /**
   * Changes an element's attributes under its lock: `change` gets the element as it is now and
   * answers its new attributes, or `undefined` to leave it. Without `event` the revision stays
   * (bookkeeping, e.g. `lastUsed`); with it the revision goes up and the event is published in
   * the same write. Answers the element as written, or undefined when it is gone or unchanged.
   */
  amend(id: string, change: (current: Element) => Attributes | undefined, event?: AmendEvent): Promise<Element | undefined>;
  /** Forgets an element whose backend object vanished: its record (and composition) go, with a `deleted` event. */
  forget(id: string, reason: string): Promise<void>;
  /** Publishes an event about something that is not an element (e.g. a host's state change). */
  announce(event: EventDraft): Promise<void>;
}

/** The door over a registry port. */
export const recordDoor = (port: RegistryPort): RecordDoor => {
  const amend: RecordDoor['amend'] = (id, change, event) =>
    port.locks.with([id], async () => {
      const cur = port.get(id);
      if (cur === undefined) return undefined;
      const attributes = change(cur);
      if (attributes === undefined) return undefined;
      const next: Element =
        event === undefined
          ? { ...cur, attributes }
          : { ...cur, attributes, revision: cur.revision + 1, modified: new Date().toISOString() };
      await port.commit({
        put: [next],
        ...(event === undefined
          ? {}
          : {
              events: [
                {
                  type: event.type,
                  id,
                  revision: next.revision,
                  ...(event.detail === undefined ? {} : { detail: event.detail }),
                },
              ],
            }),
      });
      return next;
    });
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
    pendingIntents: () => port.pendingIntents(),
    lastSeq: () => port.lastSeq(),
    readOutput: (task, run, from) => port.readOutput(task, run, from),
    amend,
    forget,
    announce: async (event) => {
      await port.commit({ events: [event] });
    },
  };
};
