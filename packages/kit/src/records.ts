/**
 * The records the registry port keeps: compositions, intents, output chunks, event drafts, and
 * the one atomic change that writes them.
 */
import * as t from 'io-ts';
import { TaskSpecC } from '@lessl/core';
import type { Element, EventType, ExecutorOptions, FunctionInfo, IdLike, MemberState } from '@lessl/core';

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
  /** Function definitions to store (by name). */
  readonly putFunction?: readonly FunctionInfo[];
  /** Function definitions to remove (by name). */
  readonly delFunction?: readonly string[];
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

/** Executor options as stored (decoded when they were first given): any plain object, copied. */
const StoredOptionsC = new t.Type<ExecutorOptions, unknown>(
  'ExecutorOptions',
  (u): u is ExecutorOptions => typeof u === 'object' && u !== null && !Array.isArray(u),
  (u, c) => (typeof u === 'object' && u !== null && !Array.isArray(u) ? t.success({ ...u }) : t.failure(u, c)),
  t.identity,
);

/** io-ts codec of a composition record as the registry stores it (its options were decoded at commit). */
export const CompositionRecordC: t.Type<CompositionRecord, unknown> = t.type({
  executor: t.string,
  options: StoredOptionsC,
  members: t.readonlyArray(MemberRecordC),
});

/** io-ts codec of a function definition as the registry stores it (decoded when it was deployed). */
export const FunctionRecordC: t.Type<FunctionInfo, unknown> = t.intersection([
  t.type({
    name: t.string,
    owner: t.string,
    image: t.string,
    spec: TaskSpecC,
    options: StoredOptionsC,
    reuse: t.keyof({ 'per-invocation': null, 'per-function': null }),
    concurrency: t.number,
    minContainers: t.number,
    maxContainers: t.number,
    idleMs: t.number,
    public: t.boolean,
    version: t.number,
    createdAt: t.string,
    updatedAt: t.string,
  }),
  t.partial({ description: t.string }),
]);

/** io-ts codec of a write intent as the registry stores it. */
export const IntentC: t.Type<Intent, unknown> = t.intersection([
  t.type({ id: t.string, started: t.string }),
  t.partial({ detail: t.UnknownRecord }),
]);
