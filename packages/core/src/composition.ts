/**
 * Composition (docs/architecture.md): Join/Bind/Unbind/Leave elements into an executor,
 * then Commit. Handles are immutable values; every verb returns a new one.
 */
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import type { Element } from './element.js';
import type { AnyError, CompositionError } from './errors.js';
import type { ElementId, IdLike } from './id.js';
import type { CallContext } from './store.js';

/** Desired (in a handle) or actual (in the registry) state of a member. */
export type MemberState = 'unbound' | 'bound';

/** An element joined to a composition. */
export interface Member {
  readonly id: ElementId;
  /** Volumes: where the volume is mounted (absolute path). */
  readonly mountpoint?: string;
  /** Volumes: mounted read-only. */
  readonly readOnly: boolean;
  readonly state: MemberState;
}

/** Executor-wide options, fixed when the executor is first committed. */
export interface ExecutorOptions {
  /** Mount the root filesystem read-only. */
  readonly readOnlyRootfs?: boolean;
  /** Network mode; backends default to no network. */
  readonly network?: string;
  readonly memoryBytes?: number;
  readonly cpus?: number;
  readonly pids?: number;
  /** Backend-specific options (documented by each backend). */
  readonly backend?: Readonly<Record<string, unknown>>;
}

/** An opaque-in-spirit, immutable snapshot of a composition. */
export interface Handle {
  readonly executor: ElementId;
  /** Executor revision the handle was taken from; 0 when the executor does not exist yet. */
  readonly revision: number;
  readonly options: ExecutorOptions;
  readonly members: readonly Member[];
}

/** Options for `join`. */
export interface JoinOptions {
  readonly mountpoint?: string;
  readonly readOnly?: boolean;
}

/** One step a commit performs. */
export type StepOp = 'create' | 'join' | 'bind' | 'unbind' | 'leave';
/** Outcome of one step. */
export type StepStatus = 'SUCCESS' | 'ERROR' | 'NOOP';

/** How a task's run ended. */
export type EndReason = 'exited' | 'deadline' | 'oom' | 'stopped' | 'not-found' | 'killed' | 'aborted' | 'lost';

/** What a task did: exit code, output in time order, separate streams, how and when it ended. */
export interface TaskResult {
  /** The task element. */
  readonly id: ElementId;
  /** null when the task was stopped or lost before it exited. */
  readonly exitCode: number | null;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  /** stdout and stderr chunks interleaved in the order they arrived. */
  readonly output: readonly { readonly stream: 'stdout' | 'stderr'; readonly data: Uint8Array }[];
  /** Output was cut at the task's output limit. */
  readonly truncated: boolean;
  /** Why it ended. */
  readonly reason: EndReason;
  /** `exited` when the process ended by itself (oom included), `killed` when stopped from outside (kill, unbind, deadline, abort), `lost` when it vanished. */
  readonly state: 'exited' | 'killed' | 'lost';
  /** ISO-8601 start and end times (null when unknown). */
  readonly startedAt: string | null;
  readonly endedAt: string | null;
}

/** Per-element result of a commit. */
export interface StepResult {
  /** The element of this step (the executor for `create`). */
  readonly id: ElementId;
  readonly op: StepOp;
  readonly status: StepStatus;
  readonly error?: AnyError;
  /** For the unbind of a running task: how it ended (its output is read with `tasks.logs`). */
  readonly task?: TaskResult;
}

/**
 * A commit either lands whole (`committed: true`, with a fresh handle at the new revision)
 * or is rolled back (`committed: false`, the failing step marked ERROR, its error given).
 */
export type CommitResult =
  | {
      readonly committed: true;
      readonly handle: Handle;
      readonly executor: Element;
      readonly results: readonly StepResult[];
    }
  | { readonly committed: false; readonly error: AnyError; readonly results: readonly StepResult[] };

/** The composition contract. */
export interface Composer {
  /** A new composition (new or unnamed executor), or a snapshot of an existing executor. */
  handle(executor?: IdLike, options?: ExecutorOptions, ctx?: CallContext): TaskEither<CompositionError, Handle>;
  /** Adds an element: an image as rootfs, a volume at a mountpoint, a task as a process. */
  join(h: Handle, id: IdLike, opts?: JoinOptions, ctx?: CallContext): TaskEither<CompositionError, Handle>;
  /** Marks one member (or all) to start. Binding a bound member is a no-op. */
  bind(h: Handle, id?: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle>;
  /** Marks one member (or all) to stop. */
  unbind(h: Handle, id?: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle>;
  /** Removes a member from the composition. */
  leave(h: Handle, id: IdLike, ctx?: CallContext): TaskEither<CompositionError, Handle>;
  /** Applies the handle: `Conflict` if the executor changed since the handle was taken. */
  commit(h: Handle, ctx?: CallContext): TaskEither<CompositionError, CommitResult>;
}
