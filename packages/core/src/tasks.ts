/**
 * The task lifecycle (docs/lifecycle.md): commit starts a task and returns; the task runs on
 * its own. Callers wait for it, read its output, kill it, or use the one-call `run()`.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import * as t from 'io-ts';
import type { EndReason, ExecutorOptions, TaskResult } from './composition.js';
import type { Duplex } from 'node:stream';
import type { CompositionError, CreateError, TaskError } from './errors.js';
import { ElementIdC, type IdLike } from './id.js';
import type { CallContext } from './store.js';
import { TaskSpecC, type TaskSpec } from './task.js';

/** Where a task is in its run. `exited`, `killed` and `lost` are final until it is bound again. */
export type TaskState = 'created' | 'starting' | 'running' | 'exited' | 'killed' | 'lost';

/** The terminal states. */
export const FINAL_STATES: readonly TaskState[] = ['exited', 'killed', 'lost'];

const EndReasonC = t.keyof({
  exited: null,
  deadline: null,
  oom: null,
  stopped: null,
  'not-found': null,
  killed: null,
  aborted: null,
  lost: null,
});

/** io-ts codec of a persisted task status (the task element's `attributes.status`). */
export const TaskStatusC = t.type({
  state: t.keyof({ created: null, starting: null, running: null, exited: null, killed: null, lost: null }),
  /** Runs of this task so far; output and status belong to the latest. */
  run: t.number,
  /** The executor it ran in last (stored as its string form, decoded to an `ElementId`). */
  executor: t.union([ElementIdC, t.null]),
  exitCode: t.union([t.number, t.null]),
  reason: t.union([EndReasonC, t.null]),
  startedAt: t.union([t.string, t.null]),
  endedAt: t.union([t.string, t.null]),
  /** Output bytes kept for this run (stdout and stderr together). */
  outputBytes: t.number,
  truncated: t.boolean,
  /** Backend details of the running process (container, exec), for reconciliation. */
  process: t.union([t.record(t.string, t.unknown), t.null]),
});

/** A task's status: state, exit code, reason, times, output size. */
export type TaskStatus = t.TypeOf<typeof TaskStatusC>;

/** The status of a task that has never run. */
export const NEVER_RAN: TaskStatus = {
  state: 'created',
  run: 0,
  executor: null,
  exitCode: null,
  reason: null,
  startedAt: null,
  endedAt: null,
  outputBytes: 0,
  truncated: false,
  process: null,
};

/** Reads a task's status from its attributes (a task that never ran is `created`). */
export const taskStatusOf = (attributes: Readonly<Record<string, unknown>>): TaskStatus => {
  const d = TaskStatusC.decode(attributes.status);
  return E.isRight(d) ? d.right : NEVER_RAN;
};

/** A chunk of a task's output. `offset` is its position in the kept output (both streams together). */
export interface OutputChunk {
  readonly stream: 'stdout' | 'stderr';
  readonly data: Uint8Array;
  readonly offset: number;
}

/** Options of `tasks.wait`. */
export interface WaitOptions extends CallContext {}

/** Options of `tasks.logs`. */
export interface LogsOptions extends CallContext {
  /** Keep the iterable open and deliver output as it arrives, until the task ends. */
  readonly follow?: boolean;
  /** Start at this byte offset of the kept output (default 0). */
  readonly since?: number;
}

/** Options of `tasks.kill`. */
export interface KillOptions extends Omit<CallContext, 'signal'> {
  /** TERM (default): SIGTERM, then SIGKILL after `graceMs`. KILL: at once. */
  readonly signal?: 'TERM' | 'KILL';
  /** Milliseconds between TERM and KILL (default 10,000). */
  readonly graceMs?: number;
}

/** The task lifecycle, on every backend. */
export interface TaskControl {
  /** The task's current status. */
  status(id: IdLike, ctx?: CallContext): TaskEither<TaskError, TaskStatus>;
  /** Resolves when the task's current run ends (at once for a run that has ended). */
  wait(id: IdLike, opts?: WaitOptions): TaskEither<TaskError, TaskResult>;
  /**
   * The task's own output, from `since`, live with `follow`. Errors (NotFound, PermissionDenied,
   * a bad option) reject the first `next()` with a `LesslError`.
   */
  logs(id: IdLike, opts?: LogsOptions): AsyncIterable<OutputChunk>;
  /** Ends the task's running process (container or exec); resolves with its final status. Idempotent. */
  kill(id: IdLike, opts?: KillOptions): TaskEither<TaskError, TaskStatus>;
  /**
   * Gives the next run of a task whose spec takes input (`interaction.stdin: true`, else
   * `InvalidEntry` naming `spec.interaction.stdin`) its stdin: call it before the commit that
   * starts the run. A run of such a task without input gets an empty stdin (closed at once); a
   * second call before the run replaces the first. Input is held in memory, not in the registry:
   * a run followed again after a restart has no stdin. A bad `data` is `InvalidEntry` naming `stdin`.
   */
  input(id: IdLike, data: TaskInput, opts?: InputOptions): TaskEither<TaskError, void>;
  /**
   * Opens a TCP connection to `port` inside the running task's executor: a port its spec
   * declares (`spec.ports`, else `InvalidEntry` naming `port`), on a backend that reaches them
   * (`supports.ports`, else `Unsupported`). Authorized as `kill` (the right to compose). A task
   * that is not running, or nothing listening on the port, is `Unavailable`. The connection is a
   * byte stream both ways; the caller ends it (`end()` or `destroy()`), and it ends when the task does.
   */
  connect(id: IdLike, port: number, opts?: ConnectOptions): TaskEither<TaskError, TaskConnection>;
}

/** Options of `tasks.connect`. */
export interface ConnectOptions extends CallContext {}

/** A connection to a port a running task serves (see `TaskControl.connect`). */
export type TaskConnection = Duplex;

/** Options of `tasks.input`. */
export interface InputOptions extends CallContext {}

/**
 * A process's input (its stdin): bytes, text (sent as UTF-8), or a stream of chunks (read as
 * the process takes them: back-pressure reaches the producer).
 */
export type TaskInput = Uint8Array | string | AsyncIterable<Uint8Array>;

/** What `run()` takes. */
export interface RunRequest extends CallContext {
  /** The image to use as the root filesystem. */
  readonly image: IdLike;
  readonly volumes?: readonly { readonly id: IdLike; readonly mountpoint: string; readonly readOnly?: boolean }[];
  /** The task spec (see `TaskSpecC`). */
  readonly spec: unknown;
  /** Executor options (limits, network, read-only rootfs, backend options). */
  readonly options?: ExecutorOptions;
  /** Keep the task and executor elements after the run (default: removed, the result is returned). */
  readonly keep?: boolean;
  /**
   * The process's stdin. Given, the task's spec takes input (`interaction.stdin` is set to true;
   * `false` in the spec with `stdin` given is `InvalidEntry`). Not given, stdin is empty.
   */
  readonly stdin?: TaskInput;
}

/** What `run()` can answer. */
export type RunError = CreateError | CompositionError | TaskError;

/** The one-call path: create the task, compose, commit, wait, clean up. */
export type RunFn = (req: RunRequest) => TaskEither<RunError, TaskResult>;

const decoder = new TextDecoder();
/**
 * Bytes as UTF-8 text (invalid sequences replaced), for output and metadata.
 * @example text(result.stdout) // 'hello\n'
 */
export const text = (b: Uint8Array | undefined | null): string => (b == null ? '' : decoder.decode(b));

/** The final state a reason gives: a process stopped from outside (kill, unbind, abort, deadline) is `killed`. */
export const stateForReason = (reason: EndReason): 'exited' | 'killed' | 'lost' =>
  reason === 'lost'
    ? 'lost'
    : reason === 'killed' || reason === 'stopped' || reason === 'aborted' || reason === 'deadline'
      ? 'killed'
      : 'exited';

/** io-ts codec of a task element's attributes: its spec (decoded at create) and its status once it ran. */
export const TaskAttributesC = t.intersection([t.type({ spec: TaskSpecC }), t.partial({ status: TaskStatusC })]);
/** A task element's attributes. */
export type TaskAttributes = t.TypeOf<typeof TaskAttributesC>;

/** A task element's spec, decoded from its attributes (`undefined` when they hold none). */
export const taskSpecOf = (attributes: Readonly<Record<string, unknown>>): TaskSpec | undefined => {
  const d = TaskSpecC.decode(attributes.spec);
  return E.isRight(d) ? d.right : undefined;
};
