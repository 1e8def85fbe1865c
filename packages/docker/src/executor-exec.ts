/**
 * Tasks run with exec inside a running container (a running executor's, or a warm one taken
 * from the pool): started, followed to their end, signalled, and followed again after a restart.
 * Killing one signals every process in the container that carries the exec's marker in its
 * environment (Docker has no call to signal an exec).
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import type { AnyError, EndReason } from '@lessl/core';
import { pipeInput, type RunSink } from '@lessl/kit';
import { fromDocker, isConnectionError, isDockerError, statusOf } from './errors.js';
import { execReach, putForwarder, reachingPorts } from './executor-ports.js';
import { envOf, secretTar } from './executor-settings.js';
import type { ContainerRuns } from './executor-follow.js';
import { Demux, readableOf } from './output.js';

/** How an exec'd task is known again: its container, its exec, its marker, and whether the container is warm. */
interface ExecRun {
  readonly containerId: string;
  readonly execId: string;
  readonly marker: string;
  readonly warm: boolean;
}

/** Puts a run's credential files into a container (created or running) before its process starts. */
export const putSecrets = async (runs: ContainerRuns, containerId: string, sink: RunSink): Promise<void> => {
  if (sink.secrets.files.length === 0) return;
  await runs.containers.putArchive(containerId, secretTar(sink.secrets.files, sink.spec.user), '/');
};

/** The shell script that signals every process carrying `marker` (KILL: stopped first, until none is left). */
const signalScript = (marker: string, signal: 'TERM' | 'KILL'): string => {
  const pids = `pids() { for p in /proc/[0-9]*; do grep -qs "LESSL_EXEC=${marker}" "$p/environ" && echo "\${p#/proc/}"; done; }`;
  return signal === 'TERM'
    ? `${pids}; kill -TERM $(pids) 2>/dev/null; true`
    : `${pids}; i=0; while [ $i -lt 100 ]; do l=$(pids); [ -z "$l" ] && break; kill -STOP $l 2>/dev/null; kill -KILL $l 2>/dev/null; i=$((i+1)); done; true`;
};

/**
 * Signals an exec'd process and its children: inside the container, every process whose
 * environment carries the exec's marker (Docker has no call to signal an exec). TERM goes to
 * each once; KILL stops them all (so none forks meanwhile), kills them, and walks `/proc` again
 * until none is left (a shell the walk reached after its children forks no more).
 */
const signalExec = async (
  runs: ContainerRuns,
  containerId: string,
  marker: string,
  user: string | undefined,
  signal: 'TERM' | 'KILL',
): Promise<void> => {
  const { exec } = runs;
  const k = await exec.create(containerId, {
    Cmd: ['sh', '-c', signalScript(marker, signal)],
    AttachStdout: true,
    AttachStderr: true,
    ...(user === undefined ? {} : { User: user }),
  });
  await new Demux(() => undefined).drain(readableOf(await exec.start(k, { hijack: true, stdin: false })));
};

/**
 * Ends an exec'd task: KILL at once, or TERM, then (after the grace period, or as soon as the
 * exec's own process is gone) KILL for whatever of the task is left (background processes too).
 */
const killExec = async (
  runs: ContainerRuns,
  run: ExecRun,
  user: string | undefined,
  signal: 'TERM' | 'KILL',
  graceMs: number,
): Promise<void> => {
  const running = async (): Promise<boolean> => (await runs.exec.inspect(run.execId).catch(() => ({ Running: false }))).Running;
  if (signal === 'TERM') {
    await signalExec(runs, run.containerId, run.marker, user, 'TERM');
    const until = Date.now() + graceMs;
    while (Date.now() < until && (await running())) await new Promise((r) => setTimeout(r, 100));
  }
  await signalExec(runs, run.containerId, run.marker, user, 'KILL');
};

/** Tells the runtime an exec'd task runs: its process (to follow it again) and how to kill it. */
const announce = (runs: ContainerRuns, sink: RunSink, run: ExecRun): void =>
  sink.started({
    process: { containerId: run.containerId, execId: run.execId, marker: run.marker, ...(run.warm ? { warm: true } : {}) },
    kill: (sig, grace) => killExec(runs, run, sink.spec.user, sig, grace),
  });

/** Reports an exec's end; a warm container's task ends its container too (one task per container). */
const endExec = async (
  runs: ContainerRuns,
  sink: RunSink,
  run: Pick<ExecRun, 'containerId' | 'warm'>,
  exitCode: number | null,
  reason: EndReason,
): Promise<void> => {
  if (!run.warm) return sink.end({ exitCode, reason });
  const { engine } = runs;
  engine.expected.add(run.containerId);
  await sink.end({
    exitCode,
    reason,
    executor: { state: 'stopped', containerId: null, mainTask: null },
    cleanup: async () =>
      engine.pool === undefined
        ? engine.removeAfter(Promise.resolve(), 'container', run.containerId)
        : engine.pool.release(run.containerId),
  });
};

/** Follows an exec to its end: output drained, then the exit code. */
const followExec = async (runs: ContainerRuns, sink: RunSink, run: ExecRun, stream: Readable, demux: Demux): Promise<void> => {
  await runs.drain(stream, demux);
  let exitCode: number | null = null;
  let reason: EndReason = 'exited';
  try {
    exitCode = (await runs.exec.inspect(run.execId)).ExitCode ?? null;
  } catch (err) {
    if (statusOf(err) === 404) reason = 'lost';
    else if (isConnectionError(err)) return;
  }
  if (reason === 'exited' && demux.notFound(exitCode)) reason = 'not-found';
  await endExec(runs, sink, run, exitCode, reason);
};

/**
 * Runs a task inside a running container with exec; returns once it has started. In a warm
 * container (`warm`), the task is the container's only one: its end removes the container. A
 * run with input gets its stdin attached: written on the exec's stream, then half-closed.
 */
export const startExec = async (
  runs: ContainerRuns,
  containerId: string,
  task: RunSink,
  warm = false,
): Promise<E.Either<AnyError, void>> => {
  const marker = randomBytes(8).toString('hex');
  const sink = reachingPorts(task, execReach(runs, containerId, task.task));
  const { spec } = sink;
  const { exec } = runs;
  try {
    await putSecrets(runs, containerId, sink);
    await putForwarder(runs, containerId, sink);
    const execId = await exec.create(containerId, {
      Cmd: [...spec.cmd],
      Env: [...envOf(sink), `LESSL_EXEC=${marker}`],
      ...(spec.pwd === undefined ? {} : { WorkingDir: spec.pwd }),
      ...(spec.user === undefined ? {} : { User: spec.user }),
      AttachStdin: sink.stdin !== undefined,
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
    });
    const socket = await exec.start(execId, { hijack: true, stdin: sink.stdin !== undefined });
    const run: ExecRun = { containerId, execId, marker, warm };
    announce(runs, sink, run);
    // the input is written as the process takes it, then stdin is half-closed (the process reads end of file)
    if (sink.stdin !== undefined) void pipeInput(sink.stdin, socket);
    void followExec(runs, sink, run, readableOf(socket), new Demux((s, data) => sink.output(s, data))).catch(() => undefined);
    return E.right(undefined);
  } catch (err) {
    if (!isDockerError(err)) throw err;
    return E.left(fromDocker(sink.task, err));
  }
};

/** Follows an exec'd task again after a restart (Docker keeps no exec output: what arrived meanwhile is lost). */
export const resumeExec = (
  runs: ContainerRuns,
  task: RunSink,
  containerId: string,
  execId: string,
  marker: string,
  warm: boolean,
): void => {
  const sink = reachingPorts(task, execReach(runs, containerId, task.task));
  const run: ExecRun = { containerId, execId, marker, warm };
  announce(runs, sink, run);
  const poll = async (): Promise<void> => {
    for (;;) {
      const info = await runs.exec.inspect(execId).catch((err: unknown) => (statusOf(err) === 404 ? undefined : null));
      if (info === undefined) return endExec(runs, sink, run, null, 'lost');
      if (info !== null && !info.Running) return endExec(runs, sink, run, info.ExitCode ?? null, 'exited');
      await new Promise((r) => setTimeout(r, 500));
    }
  };
  void poll().catch(() => undefined);
};
