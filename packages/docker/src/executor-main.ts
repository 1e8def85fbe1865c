/**
 * The main container of an executor: the task a bind starts on a stopped executor runs as its
 * container's process (a warm container from the pool when one fits, else a container made for
 * it), is killed through Docker's signals, and is stopped by an unbind.
 */
import { Duplex, type Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, restarts, runtimeError, type AnyError } from '@lessl/core';
import { pipeInput, type CommitPlan, type RunSink } from '@lessl/kit';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { startInWarm } from './executor-agent.js';
import { putSecrets } from './executor-exec.js';
import { follow, type ContainerRuns } from './executor-follow.js';
import { execReach, portsRefusal, putForwarder, reachingPorts } from './executor-ports.js';
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

/** What a created container is attached with: its output (when read) and its stdin (when the run has input). */
interface Attached {
  /** The attach stream: output to follow (`output`), stdin to write (`input`), or both. */
  readonly stream: Readable | undefined;
  readonly output: boolean;
  readonly input: Duplex | undefined;
}

/**
 * Attaches to a created container: its output (a restarted daemon's output is read from Docker's
 * log, and `log: none` reads nothing) and, for a run with input, its stdin (hijacked, so that
 * stdin can be half-closed). Nothing to attach: no stream.
 */
const attachTo = async (runs: ContainerRuns, containerId: string, sink: RunSink): Promise<Attached> => {
  const output = !restarts(sink.spec) && sink.spec.log?.destination !== 'none';
  const withInput = sink.stdin !== undefined;
  if (!output && !withInput) return { stream: undefined, output, input: undefined };
  const io = { stdout: output, stderr: output, ...(withInput ? { stdin: true, hijack: true } : {}) };
  const stream = readableOf(await runs.containers.attach(containerId, { stream: true, ...io }));
  if (!withInput) return { stream, output, input: undefined };
  if (!(stream instanceof Duplex)) {
    stream.destroy();
    throw new Error('the attach answered no stream to write stdin to');
  }
  if (!output) stream.resume(); // nothing reads it: let it flow so that its end is seen
  return { stream, output, input: stream };
};

/**
 * Prepares a created container before its start: the run's credential files, and its output and
 * stdin attached (see `attachTo`). On failure the container is removed.
 */
const prepareContainer = async (
  runs: ContainerRuns,
  containerId: string,
  sink: RunSink,
): Promise<E.Either<AnyError, Attached>> => {
  try {
    await putSecrets(runs, containerId, sink);
    await putForwarder(runs, containerId, sink);
    return E.right(await attachTo(runs, containerId, sink));
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

/**
 * The container settings of a run with input: stdin open and attached once (closed for good when
 * the attach half-closes it). Without input: as they are.
 */
const withStdin = (cfg: Docker.ContainerCreateOptions, sink: RunSink): Docker.ContainerCreateOptions =>
  sink.stdin === undefined ? cfg : { ...cfg, OpenStdin: true, StdinOnce: true, AttachStdin: true };

/** The cold path: a container made for the task, prepared, started and followed; answers its ID. */
const startCold = async (
  runs: ContainerRuns,
  plan: CommitPlan,
  cfg: Docker.ContainerCreateOptions,
  task: RunSink,
): Promise<E.Either<AnyError, string>> => {
  const c = await createContainer(runs, plan, withStdin(cfg, task), task.task);
  if (E.isLeft(c)) return c;
  const sink = reachingPorts(task, execReach(runs, c.right, task.task));
  const attached = await prepareContainer(runs, c.right, sink);
  if (E.isLeft(attached)) return attached;
  const { stream, output, input } = attached.right;
  const started = await startContainer(runs, c.right, stream, sink.task);
  if (E.isLeft(started)) return started;
  announceMain(runs, sink, c.right);
  // the input is written as the process takes it, then stdin is half-closed (the process reads end of file)
  if (sink.stdin !== undefined && input !== undefined) void pipeInput(sink.stdin, input);
  follow(runs, sink, c.right, output ? stream : undefined);
  return E.right(c.right);
};

/** Creates and starts the main container of a task (warm when one fits); the commit returns once it runs. */
export const startMain = async (runs: ContainerRuns, plan: CommitPlan, sink: RunSink): Promise<E.Either<AnyError, string>> => {
  const cfg = containerConfig(runs.engine.instance, plan, sink);
  if (E.isLeft(cfg)) return cfg;
  const refused = portsRefusal(sink.task, sink.spec, runs.agentOn, cfg.right.HostConfig?.ReadonlyRootfs === true);
  if (E.isLeft(refused)) return refused;
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
