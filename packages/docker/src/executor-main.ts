/**
 * The main container of an executor: the task a bind starts on a stopped executor runs as its
 * container's process (a warm container from the pool when one fits, else a container made for
 * it), is killed through Docker's signals, and is stopped by an unbind.
 */
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, restarts, runtimeError, type AnyError } from '@lessl/core';
import type { CommitPlan, RunSink } from '@lessl/kit';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { startInWarm } from './executor-agent.js';
import { putSecrets } from './executor-exec.js';
import { follow, type ContainerRuns } from './executor-follow.js';
import { containerConfig } from './executor-settings.js';
import { readableOf } from './output.js';
import { warmKey } from './pool.js';

/**
 * Ends a container's process: KILL at once, or TERM then KILL after the grace period. A
 * container Docker restarts is stopped (TERM, KILL at once), as a kill would be restarted.
 */
export const killContainer = async (
  runs: ContainerRuns,
  id: string,
  signal: 'TERM' | 'KILL',
  graceMs: number,
  restartable: boolean,
): Promise<void> => {
  if (signal === 'KILL' && !restartable) await runs.containers.kill(id, 'KILL');
  else await runs.containers.stop(id, signal === 'KILL' ? 0 : Math.ceil(graceMs / 1000));
};

/** Tells the runtime a main container runs: its process (to follow it again) and how to kill it. */
export const announceMain = (runs: ContainerRuns, sink: RunSink, containerId: string): void => {
  const again = restarts(sink.spec);
  sink.started({ process: { containerId }, kill: (sig, grace) => killContainer(runs, containerId, sig, grace, again) });
};

/**
 * A warm container for a one-shot task whose container settings match a pool profile and that
 * mounts no volume (Docker cannot add mounts to a running container), or undefined (cold path).
 */
const takeWarm = (runs: ContainerRuns, cfg: Docker.ContainerCreateOptions, sink: RunSink): string | undefined => {
  const pool = runs.engine.pool;
  if (pool === undefined || sink.spec.daemon === true || restarts(sink.spec) || sink.spec.log?.destination === 'none')
    return undefined;
  const { RestartPolicy: _restart, LogConfig: _log, ...host } = cfg.HostConfig ?? {};
  if ((host.Mounts ?? []).length > 0) return undefined;
  const key = warmKey({ Image: String(cfg.Image), HostConfig: host });
  return pool.has(key) ? pool.take(key) : undefined;
};

/**
 * The warm path: the task runs in a warm container that fits, through its agent or with exec
 * (answers its ID), or undefined when none does. A warm container that died while idle is removed and the next taken.
 */
const startWarm = async (
  runs: ContainerRuns,
  plan: CommitPlan,
  cfg: Docker.ContainerCreateOptions,
  sink: RunSink,
): Promise<E.Either<AnyError, string> | undefined> => {
  for (let warm = takeWarm(runs, cfg, sink); warm !== undefined; warm = takeWarm(runs, cfg, sink)) {
    const r = await startInWarm(runs, warm, sink);
    if (E.isRight(r)) {
      if (!plan.exists) runs.warmOnly.add(plan.executor.key);
      return E.right(warm);
    }
    // Docker answers 404 (gone) or 409 (not running, paused) to an exec into a container that
    // died while idle (fromDocker: NotFound, Conflict): remove it and take the next one
    const dead = r.left._tag === 'NotFound' || r.left._tag === 'Conflict';
    runs.engine.pool?.release(warm, dead);
    if (!dead) return r;
  }
  return undefined;
};

/** Creates a task's container (not started); a missing image is a `RuntimeError` naming the executor. */
const createContainer = async (
  runs: ContainerRuns,
  plan: CommitPlan,
  cfg: Docker.ContainerCreateOptions,
  task: string,
): Promise<E.Either<AnyError, string>> => {
  try {
    return E.right(await runs.containers.create(cfg));
  } catch (err) {
    if (!isDockerError(err)) throw err;
    return E.left(
      statusOf(err) === 404
        ? runtimeError(task, `the image of ${plan.executor.key} is gone from Docker`, err)
        : fromDocker(task, err),
    );
  }
};

/**
 * Prepares a created container before its start: the run's credential files, and its output
 * attached (a restarted daemon's output is read from Docker's log, and `log: none` reads
 * nothing: no attach). On failure the container is removed.
 */
const prepareContainer = async (
  runs: ContainerRuns,
  containerId: string,
  sink: RunSink,
): Promise<E.Either<AnyError, Readable | undefined>> => {
  const attach = !restarts(sink.spec) && sink.spec.log?.destination !== 'none';
  try {
    await putSecrets(runs, containerId, sink);
    const stream = attach ? await runs.containers.attach(containerId, { stream: true, stdout: true, stderr: true }) : undefined;
    return E.right(stream === undefined ? undefined : readableOf(stream));
  } catch (err) {
    await runs.removeContainer(containerId);
    return E.left(fromDocker(sink.task, err));
  }
};

/** The message of a Docker error answer (its JSON body's, else the error's own). */
const dockerMessage = (err: unknown): string => {
  const json = typeof err === 'object' && err !== null && 'json' in err ? err.json : undefined;
  const message = typeof json === 'object' && json !== null && 'message' in json ? json.message : undefined;
  if (typeof message === 'string') return message;
  return err instanceof Error ? err.message : String(err);
};

/** Starts a prepared container; on failure it is removed, and a command Docker cannot run is `InvalidEntry` naming `spec.cmd`. */
const startContainer = async (
  runs: ContainerRuns,
  containerId: string,
  stream: Readable | undefined,
  task: string,
): Promise<E.Either<AnyError, void>> => {
  try {
    await runs.containers.start(containerId);
    return E.right(undefined);
  } catch (err) {
    stream?.destroy();
    await runs.removeContainer(containerId);
    if (!isDockerError(err)) throw err;
    const code = statusOf(err);
    if (code !== 400 && code !== 500) return E.left(fromDocker(task, err));
    return E.left(invalidEntry(`task ${task} cannot start: ${dockerMessage(err)}`, task, ['spec.cmd']));
  }
};

/** The cold path: a container made for the task, prepared, started and followed; answers its ID. */
const startCold = async (
  runs: ContainerRuns,
  plan: CommitPlan,
  cfg: Docker.ContainerCreateOptions,
  sink: RunSink,
): Promise<E.Either<AnyError, string>> => {
  const c = await createContainer(runs, plan, cfg, sink.task);
  if (E.isLeft(c)) return c;
  const stream = await prepareContainer(runs, c.right, sink);
  if (E.isLeft(stream)) return stream;
  const started = await startContainer(runs, c.right, stream.right, sink.task);
  if (E.isLeft(started)) return started;
  announceMain(runs, sink, c.right);
  follow(runs, sink, c.right, stream.right);
  return E.right(c.right);
};

/** Creates and starts the main container of a task (warm when one fits); the commit returns once it runs. */
export const startMain = async (runs: ContainerRuns, plan: CommitPlan, sink: RunSink): Promise<E.Either<AnyError, string>> => {
  const cfg = containerConfig(runs.engine.instance, plan, sink);
  if (E.isLeft(cfg)) return cfg;
  const image = plan.after.find((m) => m.id.kind === 'image')?.id.key;
  if (image !== undefined) runs.engine.lastUse.set(image, Date.now());
  const warm = await startWarm(runs, plan, cfg.right, sink);
  if (warm !== undefined) return warm;
  runs.warmOnly.delete(plan.executor.key);
  return startCold(runs, plan, cfg.right, sink);
};

/** Stops a main container and removes it (unless `keep`); answers its exit code. */
export const stopMain = async (runs: ContainerRuns, containerId: string, grace: number, keep = false): Promise<number | null> => {
  runs.engine.expected.add(containerId);
  await runs.containers.stop(containerId, grace).catch(() => undefined);
  const info = await runs.containers.inspect(containerId).catch(() => undefined);
  if (!keep) await runs.removeContainer(containerId);
  return info?.State.ExitCode ?? null;
};
