/**
 * What a backend plugs into the generic stores and composer: element drivers (images,
 * volumes, tasks) and an executor driver. The generic layer does validation, policy,
 * authorization, locking, references, revisions, persistence and events; drivers only
 * make and remove backend objects.
 */
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import type * as t from 'io-ts';
import { parseId } from '@lessl/core';
import type {
  Progress,
  AnyError,
  ChecksumMismatch,
  ContainerCounts,
  CreateError,
  DeleteError,
  Element,
  ElementId,
  ExecutorOptions,
  EndReason,
  FunctionInfo,
  InvokeError,
  Member,
  Metadata,
  StepOp,
  StepResult,
  StoreConfig,
  TaskResult,
  TaskSpec,
  TaskError,
  TaskStatus,
} from '@lessl/core';
import type { CompositionRecord, Intent } from './records.js';

/** A process a driver started for a task: how to find it again and how to end it. */
export interface StartedRun {
  /** Backend details persisted with the task's status (container, exec), for reconciliation. */
  readonly process: Readonly<Record<string, unknown>>;
  /** Ends the process: TERM then KILL after `graceMs`, or KILL at once. Resolves once the signal is delivered. */
  kill(signal: 'TERM' | 'KILL', graceMs: number): Promise<void>;
  /**
   * Opens a TCP connection to `port` inside the run's executor (a port its spec declares; the
   * runtime checked that). Nothing listening: `Unavailable`. Absent: the driver reaches no ports
   * and `tasks.connect` answers `Unsupported`. The stream ends when the run does.
   */
  connect?(port: number, signal: AbortSignal | undefined): Promise<E.Either<TaskError, Duplex>>;
}

/** How a run ended, as the driver saw it. */
export interface RunOutcome {
  readonly exitCode: number | null;
  /** Default `exited`; the runtime overrides it when it asked the run to stop (kill, deadline, abort). */
  readonly reason?: EndReason;
  /** Attributes to merge into the executor's (e.g. `{ state: 'stopped', containerId: null }`). */
  readonly executor?: Readonly<Record<string, unknown>>;
  /**
   * Runs once the end is durable (or the run was discarded), before waiters wake: e.g. removing
   * a one-shot task's container, so a crash can never lose a result whose container is gone.
   */
  readonly cleanup?: () => Promise<void>;
  /** Details merged into the status's `process` (e.g. the host a lost run was on, and why it was lost). */
  readonly process?: Readonly<Record<string, unknown>>;
}

/**
 * The runtime's side of one run, handed to the driver that starts it. The driver reports output
 * and the end; the runtime persists them (output capped, the end with its `unbound` event once).
 */
export interface RunSink {
  readonly task: string;
  readonly executor: string;
  readonly spec: TaskSpec;
  /** Bytes of output kept for this run at most (the rest is dropped and `truncated` set). */
  readonly outputCap: number;
  /** Bytes of output kept so far (on resume: what the registry holds already). */
  readonly kept: number;
  /** Output as it arrives. */
  output(stream: 'stdout' | 'stderr', data: Uint8Array): void;
  /** The process is running; `kill` will be used for kill, deadline and abort. */
  started(run: StartedRun): void;
  /** The process ended. Resolves once the end is persisted (or ignored: a rolled-back commit, a stale run). */
  end(outcome: RunOutcome): Promise<void>;
  /** Why the runtime asked this run to stop, if it did. */
  readonly stopping: EndReason | undefined;
  /** The run's resolved credentials (empty when the spec has none, and on resume). */
  readonly secrets: Secrets;
  /**
   * The run's input, when its spec takes input (`interaction.stdin: true`): the driver opens the
   * process's stdin, writes these chunks in order, then closes it (an empty iterable: stdin
   * closed at once). `undefined`: the spec takes no input and the driver opens no stdin. Read
   * once; on resume (after a restart) it is `undefined`.
   */
  readonly stdin: AsyncIterable<Uint8Array> | undefined;
}

/** A file a credential puts in the task's filesystem. */
export interface SecretFile {
  /** Absolute path inside the executor. */
  readonly path: string;
  readonly data: Uint8Array;
}

/**
 * The resolved credentials of a run: handed to the driver that starts it, to put into the
 * process's environment and files, and nowhere else (not the registry, events, labels or messages).
 */
export interface Secrets {
  readonly env: Readonly<Record<string, string>>;
  readonly files: readonly SecretFile[];
}

/** Opens runs during a commit. */
export interface RunOpener {
  /** Reserves the next run of `task` in `executor`. */
  open(task: string): RunSink;
  /** Stops the running process of `task` (an unbind): TERM, then KILL after `graceMs`. */
  stop(task: string, signal: 'TERM' | 'KILL', graceMs: number): Promise<void>;
}

/** Create data wrapped for verification: consume `stream`, then call `verify()` before publishing the object. */
export interface VerifiedData {
  readonly stream: AsyncIterable<Uint8Array>;
  /** After the stream is consumed: the digest, or `ChecksumMismatch` when a checksum was given and differs. */
  verify(): E.Either<ChecksumMismatch, string>;
}

/** What an element driver's `create` gets (already validated). */
export interface DriverCreateInput {
  readonly id: ElementId;
  readonly store: StoreConfig;
  readonly parent?: Element;
  readonly data?: VerifiedData;
  readonly ro: Metadata;
  readonly rw: Metadata;
  readonly spec?: TaskSpec;
  readonly options: Readonly<Record<string, unknown>>;
  readonly signal?: AbortSignal;
  /** The caller's progress callback (drivers call it guarded: see `reportTo`). */
  readonly progress?: (p: Progress) => void;
}

/** What an element driver's `create` answers. */
export interface DriverCreated {
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly checksum?: string;
}

/** Makes and removes backend objects for images, volumes or tasks. */
export interface ElementDriver {
  /** True when `create` makes objects outside the registry: a write intent is recorded first. */
  readonly external: boolean;
  /** True when elements of this kind take data. */
  readonly supportsData: boolean;
  /** Makes the object. On Left, nothing may be left behind. */
  create(input: DriverCreateInput): Promise<E.Either<CreateError, DriverCreated>>;
  /** Removes the object. */
  destroy(element: Element): Promise<E.Either<DeleteError, void>>;
  /** Backend-level users keeping the element in use (e.g. containers not made by lessl). */
  references?(element: Element): Promise<E.Either<DeleteError, readonly string[]>>;
  /** Removes whatever an interrupted create may have left. */
  recover?(intent: Intent): Promise<void>;
}

/** A task's result as a driver reports it: the task named by its key (see `publicTaskResult`). */
export type DriverTaskResult = Omit<TaskResult, 'id'> & { readonly id: string };

/** A step's result as a driver reports it: the element named by its key (see `publicStepResult`). */
export type DriverStepResult = Omit<StepResult, 'id' | 'task'> & { readonly id: string; readonly task?: DriverTaskResult };

/** The `ElementId` of a key lessl made (a registry key, a plan step's `id`). */
export const idOfKey = (key: string): ElementId => {
  const r = parseId(key);
  if (E.isRight(r)) return r.right;
  throw new Error(`not an element ID: ${key}`);
};

/** A driver's task result as lessl answers it: its ID an `ElementId`. */
export const publicTaskResult = (r: DriverTaskResult): TaskResult => ({ ...r, id: idOfKey(r.id) });

/** A driver's step result as lessl answers it: its IDs `ElementId`s. */
export const publicStepResult = (r: DriverStepResult): StepResult => {
  const { task, ...rest } = r;
  return { ...rest, id: idOfKey(r.id), ...(task === undefined ? {} : { task: publicTaskResult(task) }) };
};

/** One step of a commit. */
export interface PlanStep {
  readonly op: StepOp;
  readonly id: string;
  readonly member?: Member;
}

/** Everything an executor driver needs to apply a commit. */
export interface CommitPlan {
  readonly executor: ElementId;
  readonly exists: boolean;
  readonly options: ExecutorOptions;
  /** Backend attributes of the executor as last committed. */
  readonly attributes: Readonly<Record<string, unknown>>;
  readonly before: readonly Member[];
  readonly after: readonly Member[];
  /** Ordered: create, unbinds, leaves, joins, binds. */
  readonly steps: readonly PlanStep[];
  /** The member elements (images, volumes, tasks), by ID. */
  readonly elements: ReadonlyMap<string, Element>;
  /** Where the driver opens a run for each task it starts. */
  readonly runs: RunOpener;
  /** Aborts the commit: the driver stops between steps and rolls back. */
  readonly signal?: AbortSignal;
}

/** An executor driver's answer: on Left it has rolled back what it did. */
export type DriverCommit = E.Either<
  { readonly error: AnyError; readonly results: readonly DriverStepResult[] },
  {
    readonly results: readonly DriverStepResult[];
    readonly attributes: Readonly<Record<string, unknown>>;
    /**
     * Removes what the new composition replaced (e.g. an old container), once the registry has
     * the commit; never called when the commit is rolled back or its registry write fails, so
     * destroying nothing before the registry has the change.
     */
    readonly retire?: () => Promise<void>;
  }
>;

/** Realizes compositions (containers, processes). */
export interface ExecutorDriver {
  /**
   * The io-ts codec of the backend's executor options (`ExecutorOptions.backend`). The composer
   * decodes them exactly with it at `handle` (and again at commit): unknown keys or wrong types
   * are `InvalidEntry`. Without one, the backend takes no backend options.
   */
  readonly backendOptions?: t.Mixed;
  /** Applies the plan's steps in order; on a failing step, rolls back the earlier ones. */
  commit(plan: CommitPlan): Promise<DriverCommit>;
  /** Undoes a driver commit whose registry write then failed. */
  undo(plan: CommitPlan, attributes: Readonly<Record<string, unknown>>): Promise<void>;
  /** Removes the executor's backend objects. */
  destroy(executor: Element, composition: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>>;
  /** Removes whatever an interrupted commit may have left. */
  recover?(intent: Intent): Promise<void>;
  /**
   * On open: a task the registry says is running. Follow it again (report output past
   * `status.outputBytes` and the end to `sink`), or end it (`reason: 'lost'` when its process is gone).
   * Without `resume`, such tasks are marked lost.
   */
  resume?(sink: RunSink, status: TaskStatus, executor: Element): Promise<void>;
  /** Stops whatever the driver runs in the background (followers, timers). Running tasks are left running. */
  close?(): Promise<void>;
}

/** The task driver shared by every backend: a task is its spec; nothing outside the registry. */
export const specOnlyTaskDriver: ElementDriver = {
  external: false,
  supportsData: false,
  create: async (input) => ({ _tag: 'Right', right: { attributes: { spec: input.spec } } }),
  destroy: async () => ({ _tag: 'Right', right: undefined }),
};

/** One invocation, as the functions layer hands it to a backend's `FunctionDriver`. */
export interface DriverInvocation {
  /** The invocation's ID (a random UUID). */
  readonly id: string;
  /** The function, as deployed (its version included). */
  readonly fn: FunctionInfo;
  /** The process's stdin (an empty iterable: stdin closed at once). */
  readonly stdin: AsyncIterable<Uint8Array>;
  /** Output as it arrives (the functions layer caps what it keeps). */
  output(stream: 'stdout' | 'stderr', data: Uint8Array): void;
  /**
   * Aborted when the invocation must stop: the caller's signal, the spec's deadline, or the
   * function's removal; the driver kills the process (KILL) and answers at once.
   */
  readonly signal: AbortSignal;
  /**
   * After the invocation ended: true when it went past what a container may be reused after
   * (output past its cap, or input its process left unread). The driver discards such a container.
   */
  spoiled(): Promise<boolean>;
}

/** How an invocation ended, as the driver saw it. */
export interface DriverInvoked {
  readonly exitCode: number | null;
  /** `exited`, `not-found` (the command does not exist), `lost` (the container or its agent died), or `killed`. */
  readonly reason: EndReason;
  /** True when no ready container was there and one was started for this invocation. */
  readonly cold: boolean;
}

/**
 * What a backend does for functions (`@lessl/kit` `makeFunctions` does the rest: definitions,
 * authorization, versions, deadlines, output caps, events, logs, figures). Containers follow
 * the function's reuse policy and sizes; never shared across functions, versions or owners.
 */
export interface FunctionDriver {
  /** Runs one invocation to its end. A container that failed under it is discarded, never reused. */
  invoke(inv: DriverInvocation): Promise<E.Either<InvokeError, DriverInvoked>>;
  /**
   * The function's containers may be prepared (`minContainers`) or its definition changed: makes
   * ready what `fn` asks for; containers of other versions finish their invocations and go.
   */
  deployed(fn: FunctionInfo): Promise<void>;
  /** The function is gone: its containers are removed (its invocations were aborted first). */
  removed(fn: FunctionInfo): Promise<void>;
  /** Containers of a function by state. */
  containers(name: string): ContainerCounts;
  /** Removes every container (the backend closes). */
  close(): Promise<void>;
}

/** The counts of a driver's containers of one function: `starting`, and its containers by how many invocations each runs. */
export const countContainers = (
  fleet: { readonly starting: number; readonly boxes: readonly { readonly busy: number }[] } | undefined,
): ContainerCounts => {
  if (fleet === undefined) return { starting: 0, idle: 0, busy: 0 };
  const busy = fleet.boxes.filter((b) => b.busy > 0).length;
  return { starting: fleet.starting, idle: fleet.boxes.length - busy, busy };
};
