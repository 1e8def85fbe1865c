/**
 * The records the registry port keeps: compositions, intents, output chunks, event drafts, and
 * the one atomic change that writes them.
 */
import * as t from 'io-ts';
import type { Element, EventType, ExecutorOptions, IdLike, MemberState } from '@lessl/core';

/** A member as persisted. */
export interface MemberRecord {
  readonly id: string;
  readonly mountpoint?: string;
  readonly readOnly: boolean;
  readonly state: MemberState;
}

/** The persisted composition of an executor. */
export interface CompositionRecord {
  readonly executor: string;
  readonly options: ExecutorOptions;
  readonly members: readonly MemberRecord[];
}

/** A write intent: recorded before a backend makes an external object, cleared with the record. */
export interface Intent {
  readonly id: string;
  readonly started: string;
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** A chunk of a task run's output, as persisted. */
export interface OutputRecord {
  readonly task: string;
  readonly run: number;
  readonly offset: number;
  readonly stream: 'stdout' | 'stderr';
  readonly data: Uint8Array;
}

/**
 * An event before it has a seq and time. IDs (`id`, detail values) may be strings or
 * `ElementId`s: the log holds their string form, and readers get `ElementId`s back.
 */
export interface EventDraft {
  readonly type: EventType;
  readonly id: IdLike;
  readonly revision: number;
  readonly detail?: Readonly<Record<string, unknown>>;
}

/** One atomic change. */
export interface Change {
  readonly put?: readonly Element[];
  readonly del?: readonly string[];
  readonly putComposition?: readonly CompositionRecord[];
  readonly delComposition?: readonly string[];
  readonly putIntent?: readonly Intent[];
  readonly delIntent?: readonly string[];
  readonly putOutput?: readonly OutputRecord[];
  readonly events?: readonly EventDraft[];
}

/**
 * When an acknowledged write is safe: `process` (written to the OS: it survives a crash of the
 * process, not a power cut) or `disk` (each group-committed batch is fsynced before its calls
 * resolve: it survives a power cut too).
 */
export type Durability = 'process' | 'disk';

const MemberRecordC: t.Type<MemberRecord, unknown> = t.intersection([
  t.type({ id: t.string, readOnly: t.boolean, state: t.keyof({ bound: null, unbound: null }) }),
  t.partial({ mountpoint: t.string }),
]);

/** io-ts codec of a composition record as the registry stores it (its options were decoded at commit). */
export const CompositionRecordC: t.Type<CompositionRecord, unknown> = t.type({
  executor: t.string,
  options: new t.Type<ExecutorOptions, unknown>(
    'ExecutorOptions',
    (u): u is ExecutorOptions => typeof u === 'object' && u !== null && !Array.isArray(u),
    (u, c) => (typeof u === 'object' && u !== null && !Array.isArray(u) ? t.success({ ...u }) : t.failure(u, c)),
    t.identity,
  ),
  members: t.readonlyArray(MemberRecordC),
});

/** io-ts codec of a write intent as the registry stores it. */
export const IntentC: t.Type<Intent, unknown> = t.intersection([
  t.type({ id: t.string, started: t.string }),
  t.partial({ detail: t.UnknownRecord }),
]);
