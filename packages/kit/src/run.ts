/**
 * `run()`: the one-call path scripts and examples use. Create the task element, compose it with
 * the image and volumes in a new executor, commit (the task starts), wait for its end, then
 * remove the executor and the task. Aborting kills the task and removes everything.
 */
import { randomUUID } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  decodeOptions,
  decodeTaskSpec,
  invalidEntry,
  keyOf,
  keyPrefix,
  RunRequestProps,
  RunVolumeProps,
  unknownLocation,
  type CallContext,
  type Composer,
  type ElementKind,
  type ElementStore,
  type RunError,
  type RunRequest,
  type TaskControl,
  type TaskResult,
} from '@lessl/core';
import { readInput, type HeldInput } from './input.js';
import { guard, type Wiring } from './wiring.js';

const policyOk = (p: string | undefined): boolean => p === undefined || p === 'read-write';

/** At most this many volumes in one `run()`. */
const MAX_VOLUMES = 256;

/** A run request decoded exactly, each field read once (volumes too): unknown keys or wrong types are InvalidEntry naming them. */
const readRequest = (req: unknown): E.Either<ReturnType<typeof invalidEntry>, RunRequest> => {
  if (typeof req !== 'object' || req === null) return E.left(invalidEntry('a run request must be an object', '', ['request']));
  const r = decodeOptions(RunRequestProps, req, 'run request');
  if (E.isLeft(r)) return r;
  const volumes = r.right.volumes;
  if (volumes !== undefined && (!Array.isArray(volumes) || volumes.length > MAX_VOLUMES))
    return E.left(
      invalidEntry(`volumes must be an array of at most ${MAX_VOLUMES} { id, mountpoint, readOnly? }`, '', ['volumes']),
    );
  const vs: RunVolume[] = [];
  const given: readonly unknown[] = Array.isArray(volumes) ? volumes : [];
  for (const [i, v] of given.entries()) {
    const d = decodeOptions(RunVolumeProps, v ?? {}, 'run volume', { prefix: `volumes[${i}]` });
    if (E.isLeft(d)) return d;
    vs.push(d.right as RunVolume);
  }
  return E.right({ ...r.right, volumes: vs } as RunRequest);
};

type RunVolume = NonNullable<RunRequest['volumes']>[number];

/** A run's input and the spec that takes it, or the spec as given when there is none. */
interface RunInput {
  readonly spec: unknown;
  readonly stdin?: HeldInput;
}

/**
 * A run given `stdin`: the input read once and the spec decoded with `interaction.stdin` set; a
 * spec saying `interaction.stdin: false` is InvalidEntry naming `stdin`. Without `stdin`: the spec as is.
 */
const readRunInput = (req: RunRequest): E.Either<ReturnType<typeof invalidEntry>, RunInput> => {
  if (req.stdin === undefined) return E.right({ spec: req.spec });
  const stdin = readInput('', req.stdin);
  if (E.isLeft(stdin)) return stdin;
  const spec = decodeTaskSpec('', req.spec);
  if (E.isLeft(spec)) return spec;
  if (spec.right.interaction?.stdin === false)
    return E.left(invalidEntry('stdin was given, but the spec says interaction.stdin: false', '', ['stdin']));
  return E.right({ spec: { ...spec.right, interaction: { ...spec.right.interaction, stdin: true } }, stdin: stdin.right });
};

/**
 * Builds `run` over a backend's parts (backends expose it as `backend.run`).
 * @example
 * const r = await unwrap(lessl.run({ image: 'image://local/base', spec: { cmd: ['echo', 'hi'] } }));
 * console.log(r.exitCode, text(r.stdout));
 */
export const makeRun =
  (
    w: Wiring,
    stores: Readonly<Record<ElementKind, ElementStore>>,
    composer: Composer,
    tasks: TaskControl,
  ): ((req: RunRequest) => TaskEither<RunError, TaskResult>) =>
  (request) =>
    guard<RunError, TaskResult>('', async () => {
      const read = readRequest(request);
      if (E.isLeft(read)) return read;
      const req = read.right;
      const input = readRunInput(req);
      if (E.isLeft(input)) return input;
      const signal = req.signal;
      if (signal?.aborted === true) return E.left(aborted('', signal.reason));
      const where = (kind: ElementKind): string | undefined =>
        [...w.stores.values()].find((s) => s.kind === kind && policyOk(s.policy))?.name;
      const ts = where('task');
      const xs = where('executor');
      if (ts === undefined || xs === undefined)
        return E.left(unknownLocation('', keyPrefix(ts === undefined ? 'task' : 'executor')));
      const suffix = randomUUID().slice(0, 12);
      const task = keyOf('task', ts, `run-${suffix}`);
      const executor = keyOf('executor', xs, `run-${suffix}`);
      const ctx: CallContext = {
        ...(req.principal === undefined ? {} : { principal: req.principal }),
        ...(signal === undefined ? {} : { signal }),
      };
      const made = await stores.task.create({ id: task, spec: input.right.spec }, ctx)();
      if (E.isLeft(made)) return made;
      try {
        const given = input.right.stdin === undefined ? E.right(undefined) : await tasks.input(task, input.right.stdin, ctx)();
        if (E.isLeft(given)) return given;
        return await startAndWait(composer, tasks, req, task, executor, ctx);
      } finally {
        if (req.keep !== true) await cleanUp({ stores, composer, tasks }, task, executor, ctx.principal);
      }
    });

/** Compose, commit, wait; on abort, kill the task and answer Aborted. */
const startAndWait = async (
  c: Composer,
  tasks: TaskControl,
  req: RunRequest,
  task: string,
  executor: string,
  ctx: CallContext,
): Promise<E.Either<RunError, TaskResult>> => {
  const p = ctx.principal === undefined ? {} : { principal: ctx.principal };
  let h = await c.handle(executor, req.options, p)();
  if (E.isRight(h)) h = await c.join(h.right, req.image, undefined, p)();
  for (const v of req.volumes ?? [])
    if (E.isRight(h)) h = await c.join(h.right, v.id, { mountpoint: v.mountpoint, readOnly: v.readOnly === true }, p)();
  if (E.isRight(h)) h = await c.join(h.right, task, undefined, p)();
  if (E.isRight(h)) h = await c.bind(h.right, task, p)();
  if (E.isLeft(h)) return h;
  const committed = await c.commit(h.right, ctx)();
  if (E.isLeft(committed)) return committed;
  if (!committed.right.committed) return E.left(committed.right.error as RunError);
  const r = await tasks.wait(task, ctx)();
  if (E.isLeft(r) && r.left._tag === 'Aborted') {
    await tasks.kill(task, { ...p, signal: 'KILL' })();
    await tasks.wait(task, p)();
  }
  return r;
};

/** What `teardown` works with. */
export interface TeardownParts {
  readonly stores: Readonly<Record<ElementKind, ElementStore>>;
  readonly composer: Composer;
  readonly tasks: TaskControl;
}

/**
 * Takes an executor apart: kills its running tasks, has every member leave and commits (up to
 * five tries, a concurrent commit may win one), then deletes the executor. Never fails: what is
 * left is reaped at the next open. Shared by `run()` and the service.
 */
export const teardown = async (parts: TeardownParts, executor: string, ctx?: CallContext): Promise<void> => {
  const p = ctx?.principal === undefined ? {} : { principal: ctx.principal };
  const { composer: c, tasks, stores } = parts;
  try {
    const h = await c.handle(executor, undefined, p)();
    if (E.isLeft(h) || h.right.revision === 0) return;
    for (const m of h.right.members) if (m.id.kind === 'task') await tasks.kill(m.id, { ...p, signal: 'KILL' })();
    for (let attempt = 0; attempt < 5; attempt++) {
      const fresh = await c.handle(executor, undefined, p)();
      if (E.isLeft(fresh)) break;
      let x = fresh.right;
      for (const m of x.members) {
        const left = await c.leave(x, m.id, p)();
        if (E.isRight(left)) x = left.right;
      }
      const done = await c.commit(x, p)();
      if (E.isRight(done) && done.right.committed) break;
    }
    await stores.executor.delete(executor, p)();
  } catch {
    // best effort: the next open reaps what is left
  }
};

/** Removes the run's executor and task, whatever happened (their records and backend objects). */
const cleanUp = async (parts: TeardownParts, task: string, executor: string, principal: string | undefined): Promise<void> => {
  const p = principal === undefined ? {} : { principal };
  await teardown(parts, executor, p);
  await parts.stores.task.delete(task, p)();
};
