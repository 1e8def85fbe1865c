/**
 * Shared types and helpers of the conformance suite.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { pack } from 'tar-stream';
import {
  isLesslError,
  type AnyError,
  type Authorizer,
  type Composer,
  type CredentialResolver,
  type DataSource,
  type ElementKind,
  type ElementStore,
  type ErrorTag,
  type EventSource,
  type LesslEvent,
  type RunFn,
  type StoreConfig,
  type TaskControl,
  type TaskSpec,
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
  /** Only with `supports.faultInjection`: the commit step (op, element id) to fail with a RuntimeError. */
  readonly failStep?: { readonly op: string; readonly id: string };
}

/** Capability manifest: gates optional areas. */
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
  /** A temp directory for `location` values (needed when `supports.reopen`). */
  readonly tempDir?: () => string;
}

/** Options of `suite`. */
export interface SuiteOptions {
  readonly test: TestFn;
  readonly factory: (opts: FactoryOptions) => Promise<TestBackend>;
  readonly supports: Supports;
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

/** The stores every case can rely on. */
export const STORES: readonly StoreConfig[] = [
  { kind: 'image', name: 'local' },
  { kind: 'image', name: 'ro', policy: 'read-only' },
  { kind: 'image', name: 'co', policy: 'create-only' },
  { kind: 'volume', name: 'local' },
  { kind: 'volume', name: 'flat', parents: false },
  { kind: 'task', name: 'local' },
  { kind: 'task', name: 'co', policy: 'create-only' },
  { kind: 'executor', name: 'local' },
];

/** A unique element name (Docker objects outlive a test; names must not clash across runs). */
export const uniq = (stem = 'e'): string => `${stem}-${randomBytes(5).toString('hex')}`;

/** Runs a TaskEither. */
export const run = <Er, A>(te: TaskEither<Er, A>): Promise<E.Either<Er, A>> => te();

/** Asserts Right and returns it. */
export const ok = async <Er, A>(te: TaskEither<Er, A>, what = 'operation'): Promise<A> => {
  const r = await te();
  if (E.isLeft(r)) assert.fail(`${what} failed: ${JSON.stringify(r.left)}`);
  return r.right;
};

/** Asserts Left with the tag, and returns the error. */
export const fails = async <T extends ErrorTag, A>(
  te: TaskEither<AnyError, A>,
  tag: T,
  what = 'operation',
): Promise<Extract<AnyError, { _tag: T }>> => {
  const r = await te();
  if (E.isRight(r)) assert.fail(`${what}: expected ${tag}, got success`);
  assert.ok(isLesslError(r.left), `${what}: not a lessl error: ${JSON.stringify(r.left)}`);
  assert.equal(r.left._tag, tag, `${what}: expected ${tag}, got ${r.left._tag}: ${r.left.message}`);
  assert.equal(typeof r.left.message, 'string');
  return r.left as Extract<AnyError, { _tag: T }>;
};

/** UTF-8 bytes. */
export const b = (s: string): Uint8Array => new TextEncoder().encode(s);
/** UTF-8 string. */
export const s = (u: Uint8Array | undefined): string | undefined => (u === undefined ? undefined : new TextDecoder().decode(u));

/** A small valid tar with one file. */
export const smallTar = async (name = 'hello.txt', body = 'hello\n'): Promise<Uint8Array> => {
  const p = pack();
  p.entry({ name, mode: 0o644 }, body);
  p.finalize();
  const parts: Uint8Array[] = [];
  for await (const c of p as AsyncIterable<Uint8Array>) parts.push(c);
  return Buffer.concat(parts);
};

/** `p`, or a rejection naming `what` if it has not settled within `ms`: a wedged call never settles. */
export const within = async <A>(p: Promise<A>, what: string, ms = 2000): Promise<A> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error(`${what} did not settle: wedged`)), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
};

/** Collects events published while `fn` runs. */
export const recording = async <A>(ev: EventSource, fn: () => Promise<A>): Promise<{ result: A; events: LesslEvent[] }> => {
  const events: LesslEvent[] = [];
  const off = ev.subscribe({}, (e) => events.push(e));
  try {
    const result = await fn();
    return { result, events };
  } finally {
    off();
  }
};

/** @internal node:assert/strict, for the cases; not part of the suite's API. */
export { assert };
