/**
 * Shared helpers of the conformance suite (its types are in `types.ts`).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { pack } from 'tar-stream';
import { isLesslError, type AnyError, type ErrorTag, type EventSource, type LesslEvent, type StoreConfig } from '@lessl/core';
import type { TestBackend } from './types.js';

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
  const e = r.left;
  assert.ok(isLesslError(e), `${what}: not a lessl error: ${JSON.stringify(e)}`);
  if (!hasTag(e, tag)) return assert.fail(`${what}: expected ${tag}, got ${e._tag}: ${e.message}`);
  assert.equal(typeof e.message, 'string');
  return e;
};

/** True when `e` is the error of tag `tag`. */
const hasTag = <T extends ErrorTag>(e: AnyError, tag: T): e is Extract<AnyError, { _tag: T }> => e._tag === tag;

/** A task spec running `script` with `sh -c` (busybox runs it, and so does the memory backend's tiny shell). */
export const sh = (script: string, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  cmd: ['sh', '-c', script],
  ...extra,
});

/** Creates an image from `data` (a new ID each call); answers its ID. */
export const newImage = async (
  l: { readonly stores: TestBackend['stores'] },
  data: () => Promise<Uint8Array>,
): Promise<string> => {
  const id = `image://local/${uniq('img')}`;
  await ok(l.stores.image.create({ id, data: await data() }), 'create image');
  return id;
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
  for await (const c of p) if (c instanceof Uint8Array) parts.push(c);
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
