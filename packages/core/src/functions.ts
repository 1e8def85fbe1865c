/**
 * Functions: a name, an owner, an image, a task spec template and a reuse policy. A function is
 * invoked with input (its process's stdin) and answers its output, as FaaS platforms do; warm
 * invocations skip the engine's API (docs/functions.md).
 */
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import type {
  Aborted,
  Conflict,
  Failure,
  InvalidEntry,
  NameCollision,
  NotFound,
  PermissionDenied,
  Unsupported,
} from './errors.js';
import type { CallContext } from './store.js';
import type { EndReason, ExecutorOptions } from './composition.js';
import type { TaskSpec } from './task.js';
import type { TaskInput } from './tasks.js';

/**
 * How invocations share containers. `per-invocation`: each invocation has a container of its own,
 * removed after it (a task's isolation). `per-function`: invocations of one function (one owner,
 * one version) may share its containers, one after another or `concurrency` at once; files in
 * /tmp may persist between them. Never across functions, versions or owners.
 */
export type ReusePolicy = 'per-invocation' | 'per-function';

const Int = (lo: number, hi: number, name: string): t.Type<number, number, unknown> =>
  t.refinement(t.number, (n) => Number.isInteger(n) && n >= lo && n <= hi, name);

/** Limits of the numbers in a function definition. */
export const FUNCTION_LIMITS = {
  concurrency: 64,
  containers: 64,
  minIdleMs: 1000,
  maxIdleMs: 24 * 3600_000,
} as const;

/**
 * io-ts codec of a function definition as callers give it (`functions.deploy`). `spec` is a task
 * spec (decoded with the task spec's rules; `daemon` and `restart` are refused: an invocation is
 * one process), `options` executor options (limits, network; `network: 'none'` by default).
 */
export const FunctionSpecC = t.intersection([
  t.type({
    /** The function's name: a valid element name (`isValidName`), unique in the backend. */
    name: t.string,
    /** The image element its containers start from (an `image://...` key). */
    image: t.string,
    /** The task spec template of each invocation (`cmd`, `env`, `pwd`, `user`, `limits`). */
    spec: t.unknown,
  }),
  t.partial({
    /** Executor options of its containers (as `composer.handle` takes them). */
    options: t.unknown,
    /** Default `per-invocation`. */
    reuse: t.keyof({ 'per-invocation': null, 'per-function': null }),
    /** Invocations one container runs at once (`per-function` only; default 1). */
    concurrency: Int(1, FUNCTION_LIMITS.concurrency, 'Concurrency'),
    /** Containers kept ready while the function is not idle (default 0). */
    minContainers: Int(0, FUNCTION_LIMITS.containers, 'MinContainers'),
    /** Most containers at once (default 4); further invocations wait for a free one. */
    maxContainers: Int(1, FUNCTION_LIMITS.containers, 'MaxContainers'),
    /** Not invoked this long, its containers are removed (scale to zero; default 5 minutes). */
    idleMs: Int(FUNCTION_LIMITS.minIdleMs, FUNCTION_LIMITS.maxIdleMs, 'IdleMs'),
    /** Every principal may read and invoke it (default false: its owner only). */
    public: t.boolean,
    /** Free text. */
    description: t.string,
  }),
]);

/** A function definition as callers give it. */
export type FunctionSpec = t.TypeOf<typeof FunctionSpecC>;

/** A deployed function: its definition with defaults applied, its owner and its version. */
export interface FunctionInfo {
  readonly name: string;
  /** The principal that deployed it (`anonymous` without one). */
  readonly owner: string;
  readonly image: string;
  /** The decoded task spec template. */
  readonly spec: TaskSpec;
  readonly options: ExecutorOptions;
  readonly reuse: ReusePolicy;
  readonly concurrency: number;
  readonly minContainers: number;
  readonly maxContainers: number;
  readonly idleMs: number;
  readonly public: boolean;
  readonly description?: string;
  /** 1 when first deployed; +1 on each deploy that changes it (an identical deploy keeps it). */
  readonly version: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

/** What `functions.invoke` takes besides the function's name. */
export interface InvokeRequest extends CallContext {
  /** The process's stdin (empty when not given). */
  readonly stdin?: TaskInput;
}

/** One invocation's answer. */
export interface Invocation {
  /** A random ID of this invocation (in its `invoked` event and the function's log). */
  readonly id: string;
  readonly function: string;
  readonly version: number;
  readonly exitCode: number | null;
  /** `exited`, or why it was stopped (`deadline`, `killed`, `aborted`), or `lost` (its container died). */
  readonly reason: EndReason;
  readonly stdout: Uint8Array;
  readonly stderr: Uint8Array;
  /** Output past the spec's `limits.outputBytes` was dropped. */
  readonly truncated: boolean;
  /** True when no ready container was there and one was started for it. */
  readonly cold: boolean;
  readonly startedAt: string;
  readonly durationMs: number;
}

/** What a function's log keeps of one invocation (its newest invocations, at most 100 per function). */
export interface InvocationRecord {
  readonly id: string;
  readonly version: number;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly exitCode: number | null;
  readonly reason: EndReason;
  readonly cold: boolean;
  /** The last 4 KiB of its stderr, as UTF-8 text (its stdout is the caller's alone: never kept). */
  readonly stderrTail: string;
}

/** A function's containers by state: starting, idle (ready, running nothing), busy. */
export interface ContainerCounts {
  readonly starting: number;
  readonly idle: number;
  readonly busy: number;
}

/** Figures of one function (for metrics). */
export interface FunctionStats {
  readonly name: string;
  readonly owner: string;
  readonly version: number;
  readonly invocations: number;
  /** Invocations that did not exit 0 (a non-zero exit, a deadline, a lost container, an error). */
  readonly errors: number;
  readonly cold: number;
  readonly warm: number;
  readonly containers: ContainerCounts;
}

/** What deploying can answer. */
export type DeployError = InvalidEntry | NameCollision | PermissionDenied | NotFound | Unsupported | Conflict | Failure;
/** What reading or removing a function can answer (another principal's private function is `NotFound`). */
export type FunctionError = InvalidEntry | NotFound | PermissionDenied | Failure;
/** What an invocation can answer (a non-zero exit is an `Invocation`, not an error). */
export type InvokeError = FunctionError | Unsupported | Aborted;

/** The functions of a backend. Every call takes the caller's principal (`ctx.principal`), as stores do. */
export interface Functions {
  /**
   * Creates or updates the caller's function (the caller becomes its owner); answers it with its
   * version. A name another principal owns is `NameCollision`. Containers of an older version
   * finish their invocations and are removed.
   */
  deploy(spec: unknown, ctx?: CallContext): TaskEither<DeployError, FunctionInfo>;
  /** A function the caller may read: its own or a public one (else `NotFound`). */
  get(name: string, ctx?: CallContext): TaskEither<FunctionError, FunctionInfo>;
  /** The functions the caller may read, by name. */
  list(ctx?: CallContext): TaskEither<FunctionError, readonly FunctionInfo[]>;
  /**
   * Removes the caller's function. Invocations under way are killed (KILL) and end with reason
   * `killed`; its containers are removed.
   */
  remove(name: string, ctx?: CallContext): TaskEither<FunctionError, void>;
  /** Invokes a function the caller may read, with `stdin`; answers once its process has ended. */
  invoke(name: string, req?: InvokeRequest): TaskEither<InvokeError, Invocation>;
  /** The newest invocations of a function the caller owns, newest first. */
  logs(name: string, ctx?: CallContext): TaskEither<FunctionError, readonly InvocationRecord[]>;
  /** Figures of every function. */
  stats(): readonly FunctionStats[];
}

/** What a function authorizer decides on. */
export type FunctionOperation = 'deploy' | 'read' | 'invoke' | 'remove' | 'logs';

/**
 * Decides whether `principal` may do `op` on `fn` (`undefined`: deploying a function whose name
 * is free). A function the caller may not `read` answers `NotFound`, as if it did not exist.
 */
export type FunctionAuthorizer = (principal: string, op: FunctionOperation, fn: FunctionInfo | undefined) => boolean;

/**
 * The default function authorizer: a free name is anyone's to deploy; a function's owner may do
 * everything with it; a public one is everyone's to read and invoke.
 */
export const functionOwnerRule: FunctionAuthorizer = (principal, op, fn) =>
  fn === undefined || fn.owner === principal || (fn.public && (op === 'read' || op === 'invoke'));
