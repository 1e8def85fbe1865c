/**
 * The record door for code that already holds an element's lock in the registry's own locks
 * (a `tryWith` that must never wait, or a Docker step that must happen between the read and the
 * write). Such code cannot call the registry's door, whose `amend` would wait for the lock the
 * caller holds; this door takes its locks from a lock of its own instead, so every write still
 * goes through `amend`, under the caller's hold of the element.
 */
import { KeyedLock, recordDoor, type RecordDoor, type RegistryPort } from '@lessl/level';

/** `port` with `locks` replaced: reads (the door's own) and writes go to `port`. */
const withLocks = (port: RegistryPort, locks: KeyedLock): RegistryPort => ({
  ...recordDoor(port),
  locks,
  events: port.events,
  commit: (change) => port.commit(change),
  clearOutput: (task, beforeRun) => port.clearOutput(task, beforeRun),
  compactEvents: (before) => port.compactEvents(before),
  close: () => port.close(),
});

/**
 * A door over `port` for callers that hold the element's lock in `port.locks` while they call
 * `amend` (and only then: it does not serialise against anyone else).
 */
export const heldDoor = (port: RegistryPort): RecordDoor => recordDoor(withLocks(port, new KeyedLock()));
