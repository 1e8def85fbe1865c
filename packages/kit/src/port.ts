/**
 * The registry port: what the generic kit (stores, composer, task runtime, run) needs of a
 * registry. `Registry` (LevelDB through `level`) implements it; a shared store plugs in here.
 */
import type { Element, FunctionInfo, LesslEvent } from '@lessl/core';
import type { EventHub } from './hub.js';
import type { KeyedLock } from './lock.js';
import type { Change, CompositionRecord, Intent, OutputRecord } from './records.js';

/** Reads of the registry: from an index that mirrors what is durable. */
export interface RegistryReads {
  /** A random ID fixed when the registry is first created: backends label their objects with it. */
  readonly instanceId: string;
  /** The element with this ID, if any. */
  get(id: string): Element | undefined;
  /** Every element, in ID order. */
  all(): Element[];
  /** Elements whose ID starts with `prefix`, in ID order, at most `limit`, that `pred` keeps. */
  scan(prefix: string, limit?: number, pred?: (e: Element) => boolean): Element[];
  /** True when a write intent exists for this ID. */
  hasIntent(id: string): boolean;
  /** Direct children of an element. */
  childrenOf(id: string): string[];
  /** Executors whose composition includes this element. */
  usersOf(id: string): string[];
  /** The composition of an executor. */
  composition(executor: string): CompositionRecord | undefined;
  /** Write intents left by an interrupted create or delete. */
  pendingIntents(): Intent[];
  /** Every function definition, by name. */
  functions(): FunctionInfo[];
  /** Last durable seq. */
  lastSeq(): number;
  /** The kept output of a task's run, in order, from the chunk that holds byte `from` on. */
  readOutput(task: string, run: number, from?: number): Promise<OutputRecord[]>;
}

/** The registry port: reads, one atomic write (`commit`), output and event retention, locks, events. */
export interface RegistryPort extends RegistryReads {
  /** Per-element locks, shared by the stores, the composer and the backend's door. */
  readonly locks: KeyedLock;
  /** The event stream of this registry. */
  readonly events: EventHub;
  /** Commits one change atomically; resolves with its events once durable and published. */
  commit(change: Change): Promise<LesslEvent[]>;
  /** Removes the kept output of a task: every run, or the runs before `beforeRun`. */
  clearOutput(task: string, beforeRun?: number): Promise<void>;
  /** Removes the events older than `before` (never the newest); answers how many. */
  compactEvents(before: Date): Promise<number>;
  /** Waits for queued writes, then closes. */
  close(): Promise<void>;
}
