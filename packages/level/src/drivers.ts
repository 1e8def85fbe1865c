/**
 * What a backend plugs into the generic stores and composer: element drivers (images,
 * volumes, tasks) and an executor driver. The generic layer does validation, policy,
 * authorization, locking, references, revisions, persistence and events; drivers only
 * make and remove backend objects.
 */
import type * as E from 'fp-ts/lib/Either.js';
import type {
  AnyError,
  ChecksumMismatch,
  CreateError,
  DeleteError,
  Element,
  ElementId,
  ExecutorOptions,
  Member,
  MemberState,
  Metadata,
  StepOp,
  StepResult,
  StoreConfig,
  TaskSpec,
} from '@lessl/core';
import type { CompositionRecord, Intent } from './registry.js';

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
  readonly signal?: AbortSignal;
}

/** An executor driver's answer: on Left it has rolled back what it did. */
export type DriverCommit = E.Either<
  { readonly error: AnyError; readonly results: readonly StepResult[] },
  {
    readonly results: readonly StepResult[];
    readonly attributes: Readonly<Record<string, unknown>>;
    /** Members whose state after the commit differs from the handle's (a one-shot task that ran and ended). */
    readonly states?: Readonly<Record<string, MemberState>>;
  }
>;

/** Realizes compositions (containers, processes). */
export interface ExecutorDriver {
  /** Applies the plan's steps in order; on a failing step, rolls back the earlier ones. */
  commit(plan: CommitPlan): Promise<DriverCommit>;
  /** Undoes a driver commit whose registry write then failed. */
  undo(plan: CommitPlan, attributes: Readonly<Record<string, unknown>>): Promise<void>;
  /** Removes the executor's backend objects. */
  destroy(executor: Element, composition: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>>;
  /** Removes whatever an interrupted commit may have left. */
  recover?(intent: Intent): Promise<void>;
}

/** The task driver shared by every backend: a task is its spec; nothing outside the registry. */
export const specOnlyTaskDriver: ElementDriver = {
  external: false,
  supportsData: false,
  create: async (input) => ({ _tag: 'Right', right: { attributes: { spec: input.spec } } }),
  destroy: async () => ({ _tag: 'Right', right: undefined }),
};
