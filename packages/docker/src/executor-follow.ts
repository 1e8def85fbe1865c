/**
 * The container driver's followers: a main container followed to its end (its output handed to
 * the runtime as it arrives, then its exit code), a daemon that Docker restarts followed across
 * its runs, and the end reported (a one-shot task's container removed once the end is durable).
 */
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import { restarts, type EndReason } from '@lessl/core';
import type { RunSink } from '@lessl/kit';
import type { ContainersClient, ExecClient } from './client/index.js';
import { isConnectionError, statusOf } from './errors.js';
import { HostPorts } from './agent/forward-host.js';
import type { Host } from './host.js';
import { Demux, readableOf, StampedLog } from './output.js';

/** A run's sink handing everything on to `sink`, but `started` and `end` through `over` when it gives them. */
export const sinkOver = (sink: RunSink, over: Partial<Pick<RunSink, 'started' | 'end'>>): RunSink => ({
  task: sink.task,
  executor: sink.executor,
  spec: sink.spec,
  outputCap: sink.outputCap,
  secrets: sink.secrets,
  stdin: sink.stdin,
  get kept() {
    return sink.kept;
  },
  get stopping() {
    return sink.stopping;
  },
  output: (stream, data) => sink.output(stream, data),
  started: over.started ?? ((run) => sink.started(run)),
  end: over.end ?? ((outcome) => sink.end(outcome)),
});

/** What the container driver's parts share: the engine, the streams being read, and the close. */
export class ContainerRuns {
  /** Followers still reading a stream; closed when the backend closes. */
  readonly followers = new Set<Readable>();
  /** The port forwarders of running runs (their exec streams); closed when the backend closes. */
  readonly reaches = new Set<{ close(): void }>();
  /** Whether ports may still be reached from this machine (agent/forward-host.ts). */
  readonly hostPorts = new HostPorts();
  /** Aborts the waits on main containers when the backend closes (the next open finds their ends). */
  readonly closing = new AbortController();
  /**
   * Executors made in this process that have only run in warm containers (which carry no
   * `lessl.id` label): deleting one need not list labelled containers, a round trip on the warm
   * path's clean-up. A cold container or a rolled-back commit takes the executor out.
   */
  readonly warmOnly = new Set<string>();

  /**
   * @param engine the engine the runs are on
   * @param agentOn whether tasks may use the in-container agent (the backend's `agent` option):
   *   without it, a task's ports cannot be reached
   * @param directPorts whether a task's ports may be reached from this machine, not through the
   *   engine, when they can be (the backend's `directPorts` option; agent/forward-host.ts)
   */
  constructor(
    readonly engine: Host,
    readonly agentOn = true,
    readonly directPorts = true,
  ) {}

  /** The engine's containers. */
  get containers(): ContainersClient {
    return this.engine.clients.containers;
  }

  /** The engine's execs. */
  get exec(): ExecClient {
    return this.engine.clients.exec;
  }

  /** True once the backend is closing: followers stop, the next open finds the ends. */
  get closed(): boolean {
    return this.closing.signal.aborted;
  }

  /** Removes a container (gone is fine; a failure is retried by the janitor). */
  removeContainer(id: string): Promise<void> {
    return this.engine.removeQuietly(id);
  }

  /** Hands a stream to `demux` until it ends (closed early when the backend closes). */
  async drain(stream: Readable, demux: Demux): Promise<void> {
    this.followers.add(stream);
    await demux.drain(stream);
    this.followers.delete(stream);
  }

  /** Waits for a container's end (given up when the backend closes); answers its exit code. */
  async waitEnd(containerId: string): Promise<number> {
    return (await this.containers.wait(containerId, { signal: this.closing.signal })).StatusCode;
  }

  /** Stops following: every stream is closed, every wait given up. */
  close(): void {
    this.closing.abort();
    for (const s of this.followers) s.destroy();
    this.followers.clear();
    for (const r of this.reaches) r.close();
    this.reaches.clear();
  }
}

/** A container's log since `since`, live with `follow` (without it, dockerode answers one buffer). */
export const logStream = async (runs: ContainerRuns, containerId: string, follow: boolean, since?: string): Promise<Readable> => {
  const opts = { follow, stdout: true, stderr: true, ...(since === undefined ? {} : { since, timestamps: true }) };
  return readableOf(await runs.containers.logs(containerId, opts));
};

/**
 * Reports a main container's end; a one-shot task's container is removed once the end is
 * durable and before waiters wake (a crash in between leaves a container reconciliation
 * removes, never a lost result).
 */
const endMain = async (
  runs: ContainerRuns,
  sink: RunSink,
  containerId: string,
  exitCode: number | null,
  reason: EndReason,
): Promise<void> => {
  const oneShot = sink.spec.daemon !== true;
  if (oneShot) runs.engine.expected.add(containerId);
  await sink.end({
    exitCode,
    reason,
    executor: oneShot ? { state: 'stopped', containerId: null, mainTask: null } : { state: 'stopped', mainTask: null },
    ...(oneShot ? { cleanup: () => runs.removeContainer(containerId) } : {}),
  });
};

/** How a main container ended: its exit code and why; undefined when no one can tell now (the next open will). */
const mainEnd = async (
  runs: ContainerRuns,
  containerId: string,
): Promise<{ exitCode: number | null; reason: EndReason } | undefined> => {
  let exitCode: number | null = null;
  try {
    exitCode = await runs.waitEnd(containerId);
    const info = await runs.containers.inspect(containerId);
    return { exitCode, reason: info.State.OOMKilled ? 'oom' : 'exited' };
  } catch (err) {
    if (statusOf(err) === 404) return { exitCode, reason: 'lost' };
    if (isConnectionError(err) || runs.closed) return undefined; // the engine went away or the backend closed
    return { exitCode, reason: 'exited' };
  }
};

/**
 * Follows a main container to its end: output drained first, then the exit code; a one-shot
 * task's container is removed once its end is durable.
 */
export const followMain = async (
  runs: ContainerRuns,
  sink: RunSink,
  containerId: string,
  stream: Readable | undefined,
  demux: Demux,
): Promise<void> => {
  if (stream !== undefined) await runs.drain(stream, demux);
  const end = await mainEnd(runs, containerId);
  if (end === undefined) return;
  const reason = end.reason === 'exited' && demux.notFound(end.exitCode) ? 'not-found' : end.reason;
  await endMain(runs, sink, containerId, end.exitCode, reason);
};

/** Reads (or, without a log, waits for) a restarting daemon's runs until it stops for good; undefined once closing. */
const restartingRuns = async (
  runs: ContainerRuns,
  containerId: string,
  log: StampedLog | undefined,
): Promise<Docker.ContainerInspectInfo | undefined> => {
  for (;;) {
    if (log === undefined) await runs.waitEnd(containerId);
    else await runs.drain(await logStream(runs, containerId, true, log.since()), log.demux);
    if (runs.closed) return undefined; // the next open follows it again
    const info = await runs.containers.inspect(containerId);
    if (!info.State.Running && !info.State.Restarting) return info;
    if (info.State.Restarting) await new Promise((r) => setTimeout(r, 100));
  }
};

/**
 * Follows a daemon that Docker restarts (its restart policy): every run's output, read from
 * Docker's log (each read ends when a run ends; the next starts where the last stopped), until
 * the container stops for good (policy exhausted, or stopped by lessl). One lessl run.
 */
const followRestarting = async (
  runs: ContainerRuns,
  sink: RunSink,
  containerId: string,
  log: StampedLog | undefined,
): Promise<void> => {
  let info: Docker.ContainerInspectInfo | undefined;
  try {
    info = await restartingRuns(runs, containerId, log);
    if (info === undefined) return;
    if (log !== undefined) await runs.drain(await logStream(runs, containerId, false, log.since()), log.demux);
  } catch (err) {
    if (statusOf(err) === 404) return endMain(runs, sink, containerId, null, 'lost');
    if (isConnectionError(err) || runs.closed) return; // the engine went away or the backend closed: the next open finds the end
    throw err;
  }
  await endMain(runs, sink, containerId, info.State.ExitCode ?? null, info.State.OOMKilled ? 'oom' : 'exited');
};

/** Follows a started main container, restarted by Docker or not; reads no output for `log: none`. */
export const follow = (
  runs: ContainerRuns,
  sink: RunSink,
  containerId: string,
  attached: Readable | undefined,
  skip = 0,
): void => {
  const reads = sink.spec.log?.destination !== 'none';
  const out = (st: 'stdout' | 'stderr', data: Uint8Array): void => sink.output(st, data);
  const done = restarts(sink.spec)
    ? followRestarting(runs, sink, containerId, reads ? new StampedLog(out, skip) : undefined)
    : followMain(runs, sink, containerId, attached, new Demux(out, skip));
  void done.catch(() => undefined);
};
