/**
 * A git source built by the engine: cloned, then built from its Dockerfile as the element's
 * reference, with its labels, no network and no pulls (every image it builds FROM must be on the
 * engine already). The clone is removed whatever happens.
 */
import type { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { aborted, invalidEntry, type AnyError, type Progress } from '@lessl/core';
import type { EgressGuard } from '../egress.js';
import type { Host } from '../host.js';
import { followJson } from '../streams.js';
import { fromDocker } from '../errors.js';
import { baseImages, buildContext, checkout, type GitSource } from '../sources.js';
import { hasImage } from './engine-io.js';

/** What a build needs of its create. */
export interface BuildJob {
  readonly engine: Host;
  readonly id: string;
  readonly ref: string;
  readonly labels: Record<string, string>;
  readonly report: (p: Progress) => void;
  readonly signal?: AbortSignal;
  readonly egress?: EgressGuard;
}

/** The first image the Dockerfile builds FROM that is not on the engine (refused: lessl never pulls during a build). */
const missingBase = async (job: BuildJob, dockerfile: string): Promise<E.Either<AnyError, void>> => {
  for (const base of baseImages(dockerfile)) {
    if (base.includes('$') || (await hasImage(job.engine, base))) continue;
    return E.left(
      invalidEntry(
        `the Dockerfile builds FROM ${base}, which is not on the engine; lessl never pulls during a build: create or preload it first`,
        job.id,
        ['options.source'],
      ),
    );
  }
  return E.right(undefined);
};

/** Has the engine build `context`, reporting its steps. */
const runBuild = async (
  job: BuildJob,
  src: GitSource,
  context: Readable,
  dockerfile: string,
): Promise<E.Either<AnyError, void>> => {
  const s = await job.engine.clients.images.build(
    context,
    {
      t: job.ref,
      dockerfile,
      labels: job.labels,
      networkmode: 'none',
      rm: true,
      forcerm: true,
      ...(src.buildArgs === undefined ? {} : { buildargs: src.buildArgs }),
    },
    { signal: job.signal },
  );
  const r = await followJson(s, (m) => {
    const step = typeof m.stream === 'string' ? /^Step (\d+)\/(\d+) : (.*)/.exec(m.stream) : null;
    if (step !== null) job.report({ phase: 'build', done: Number(step[1]) - 1, total: Number(step[2]), detail: step[3] ?? '' });
  });
  if (r.error !== undefined) return E.left(invalidEntry(`the build failed: ${r.error}`, job.id, ['options.source']));
  job.report({ phase: 'build', detail: 'done' });
  return E.right(undefined);
};

/**
 * Clones `src` and has the engine build it as `job.ref`; `onCommit` hears the commit it built
 * (what refresh compares to tell unchanged content).
 */
export const buildFromGit = async (
  job: BuildJob,
  src: GitSource,
  onCommit: (commit: string) => void,
): Promise<E.Either<AnyError, void>> => {
  const { id, signal } = job;
  const co = await checkout({ id, report: job.report, signal, egress: job.egress }, src);
  if (E.isLeft(co)) return signal?.aborted === true ? E.left(aborted(id, signal.reason)) : co;
  onCommit(co.right.commit);
  try {
    const dockerfile = src.dockerfile ?? 'Dockerfile';
    const ctx = await buildContext(id, co.right.dir, dockerfile);
    if (E.isLeft(ctx)) return ctx;
    const missing = await missingBase(job, ctx.right.text);
    if (E.isLeft(missing)) return missing;
    return await runBuild(job, src, ctx.right.context, dockerfile);
  } catch (err) {
    if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
    return E.left(fromDocker(id, err));
  } finally {
    await co.right.cleanup();
  }
};
