/**
 * The shared types of the conformance suite: what a factory answers, what the suite takes, and
 * one case. Every case module imports them from here (and nothing from `index.ts`).
 */
import type {
  Authorizer,
  Capabilities,
  Composer,
  CredentialResolver,
  DataSource,
  ElementKind,
  ElementStore,
  EventSource,
  RunFn,
  StoreConfig,
  TaskControl,
  TaskSpec,
  Functions,
} from '@lessl/core';

/** A test registrar compatible with vitest, node:test, mocha-ish runners: `test(name, fn, timeoutMs?)`. */
export type TestFn = (name: string, fn: () => Promise<void>, timeout?: number) => void;

/** What a factory returns: the backend under test. */
export interface TestBackend {
  readonly stores: Readonly<Record<ElementKind, ElementStore>>;
  readonly composer: Composer;
  readonly events: EventSource;
  readonly tasks: TaskControl;
  readonly run: RunFn;
  /** The backend's functions (`Backend.functions`); without them the functions cases probe nothing. */
  readonly functions?: Functions;
  /**
   * The backend's capability manifest (`Backend.supports`): the suite reads what the backend
   * supports here. A backend without one is taken at the deprecated `SuiteOptions.supports`.
   */
  readonly supports?: Capabilities;
  close(): Promise<void>;
}

/** What the suite asks a factory for. */
export interface FactoryOptions {
  readonly stores: readonly StoreConfig[];
  readonly authorize?: Authorizer;
  /** When set, the backend must persist its registry here so that a second factory call with the same value reopens it. */
  readonly location?: string;
  /** A credential resolver the backend must be opened with (its `credentials` option). */
  readonly credentials?: CredentialResolver;
  /** Only with `faultInjection`: the commit step (op, element id) to fail with a RuntimeError. */
  readonly failStep?: { readonly op: string; readonly id: string };
}

/**
 * The hand-typed manifest of earlier versions.
 * @deprecated the suite reads the backend's own `supports` (`Capabilities`); pass
 * `faultInjection` as its own option. Still honoured for a backend that answers no manifest.
 */
export interface Supports {
  /** Images and volumes take parents. */
  readonly parents: boolean;
  /** Images and volumes take data streams. */
  readonly data: boolean;
  /** The factory honours `location` (persistence across reopen). */
  readonly reopen: boolean;
  /** The factory honours `failStep` (rollback tests). */
  readonly faultInjection: boolean;
}

/** Backend-specific inputs. */
export interface Fixtures {
  /** Content for an image that can run `taskSpec` (a tar for Docker). */
  readonly imageData?: () => DataSource;
  /** A long-running task spec the image can run. */
  readonly taskSpec?: TaskSpec;
  /** A temp directory for `location` values (needed for the reopen cases). */
  readonly tempDir?: () => string;
}

/** Options of `suite`. */
export interface SuiteOptions {
  readonly test: TestFn;
  readonly factory: (opts: FactoryOptions) => Promise<TestBackend>;
  /**
   * The factory honours `failStep` (a test-harness ability, not a backend feature): the rollback
   * cases run. Default: the deprecated `supports.faultInjection`, else false.
   */
  readonly faultInjection?: boolean;
  /**
   * What the backend supports, typed by hand.
   * @deprecated the suite reads `supports` from the backend the factory answers (its
   * `Capabilities`); this is used only for a backend that answers none. Pass `faultInjection`
   * as its own option.
   */
  readonly supports?: Supports;
  readonly fixtures?: Fixtures;
  /** Runs of each property-based test (default 40). */
  readonly propertyRuns?: number;
  /** Runs of each hostile-input property (default 100); env HOSTILE_RUNS overrides it. */
  readonly hostileRuns?: number;
  /** How long one hostile call, or the write that follows it, may take before it counts as wedged (default 15 s). */
  readonly hostileBoundMs?: number;
  /** Per-test timeout in ms (default 60 s). */
  readonly timeout?: number;
  /** Prefix for test names. */
  readonly prefix?: string;
}

/** One case: runs against a fresh backend. */
export interface Case {
  readonly name: string;
  readonly fn: (l: TestBackend) => Promise<void>;
  /** Its own timeout in ms, when it needs more than the suite's. */
  readonly timeout?: number;
}

/** The image content the cases use (the fixture's, else a small tar), read once per suite. */
export type ImageData = () => Promise<Uint8Array>;
