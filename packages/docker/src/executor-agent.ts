/**
 * One-shot tasks in a warm container whose main process is lessl-agent (agent/container.ts): the
 * task is a fork and an exec inside the container, with no engine call (credential files, when
 * the task has some, still go in with `putArchive`). Env, cwd and user come from the spec; stdout
 * and stderr stay apart; stdin comes from the run's input; the deadline, kill and abort signal
 * its process group (TERM, then KILL after the grace). Its end releases the container (one task
 * per container). A container whose agent broke ends the task `lost` (or `killed` once a kill was
 * asked) and is removed. After a restart of the embedder a task there cannot be followed again:
 * it ends `lost` and its container is removed (`resumeAgent`).
 */
import * as E from 'fp-ts/lib/Either.js';
import { conflict, type AnyError } from '@lessl/core';
import type { RunSink } from '@lessl/kit';
import type { AgentContainer, AgentRunEnd } from './agent/container.js';
import { fromDocker, isDockerError } from './errors.js';
import { putSecrets, startExec } from './executor-exec.js';
import type { ContainerRuns } from './executor-follow.js';
import { portReach, reachingPorts } from './executor-ports.js';
import { envOf } from './executor-settings.js';
import type { PortReach } from './agent/forward-exec.js';

/** Reports a warm task's end; the container goes back to the pool, which removes it. */
const endWarm = (runs: ContainerRuns, sink: RunSink, containerId: string, end: AgentRunEnd): Promise<void> => {
  const { engine } = runs;
  engine.expected.add(containerId);
  return sink.end({
    exitCode: end.exitCode,
    reason: end.reason,
    executor: { state: 'stopped', containerId: null, mainTask: null },
    cleanup: async () =>
      engine.pool === undefined
        ? engine.removeAfter(Promise.resolve(), 'container', containerId)
        : engine.pool.release(containerId),
  });
};

/** A run's ports over the warm container's agent channel. */
const agentReach = (agent: AgentContainer, task: string): PortReach => {
  const fwd = agent.ports(task);
  return { connect: (port, signal) => fwd.connect(port, signal), close: () => fwd.close('the task ended') };
};

/** Runs a one-shot task through a warm container's agent; answers once it started. */
const startAgentRun = async (
  runs: ContainerRuns,
  containerId: string,
  agent: AgentContainer,
  task: RunSink,
): Promise<E.Either<AnyError, void>> => {
  const sink = reachingPorts(
    task,
    portReach(runs, containerId, task.task, () => agentReach(agent, task.task)),
  );
  const { spec } = sink;
  try {
    await putSecrets(runs, containerId, sink);
  } catch (err) {
    if (!isDockerError(err)) throw err;
    return E.left(fromDocker(sink.task, err));
  }
  // output may come with the agent's first answer: held until the runtime knows the run started
  let held: [stream: 'stdout' | 'stderr', data: Uint8Array][] | undefined = [];
  const run = agent.run({
    argv: spec.cmd,
    env: envOf(sink),
    ...(spec.pwd === undefined ? {} : { cwd: spec.pwd }),
    ...(spec.user === undefined ? {} : { user: spec.user }),
    ...(sink.stdin === undefined ? {} : { stdin: sink.stdin }),
    output: (stream, data) => (held === undefined ? sink.output(stream, data) : held.push([stream, data])),
  });
  if (E.isLeft(run)) return E.left({ ...run.left, id: sink.task, keys: run.left.keys.map((k) => `spec.${k}`) });
  if (!(await run.right.started)) return E.left(conflict(containerId, 0, 0)); // paused or dead: the caller takes the next
  sink.started({
    process: { containerId, agent: true, warm: true },
    kill: async (signal, graceMs) => void (await run.right.stop(signal, graceMs)),
  });
  for (const [stream, data] of held) sink.output(stream, data);
  held = undefined;
  void run.right.done.then((end) => endWarm(runs, sink, containerId, end)).catch(() => undefined);
  return E.right(undefined);
};

/**
 * Runs a one-shot task in a warm container taken from the pool: through its agent when it runs
 * one, else with exec. An agent that broke while idle, or does not answer the run (a paused
 * container), answers `Conflict` (as the engine answers an exec into a stopped or paused
 * container): the caller removes the container and takes the next.
 */
export const startInWarm = (runs: ContainerRuns, containerId: string, sink: RunSink): Promise<E.Either<AnyError, void>> => {
  const agent = runs.engine.pool?.agentOf(containerId);
  if (agent === undefined) return startExec(runs, containerId, sink, true);
  if (agent.broken) return Promise.resolve(E.left(conflict(containerId, 0, 0)));
  return startAgentRun(runs, containerId, agent, sink);
};

/** A task that ran through an agent while no backend watched: it cannot be followed again; it ends `lost`, its container removed. */
export const resumeAgent = async (runs: ContainerRuns, sink: RunSink, containerId: string): Promise<void> =>
  endWarm(runs, sink, containerId, { exitCode: null, reason: 'lost' });
