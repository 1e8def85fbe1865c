/**
 * A task's ports (`spec.ports`) on the Docker backend: reached through the in-container agent, so
 * the container keeps its network (`none` by default). In a warm agent container, over the agent's
 * own channel; elsewhere (a cold container, a task exec'd into a running executor) the agent's
 * binary goes into the container with the run and one exec of `lessl-agent --forward` carries its
 * connections (agent/forward-exec.ts). Refused at commit, `Unsupported` naming `spec.ports`: with
 * no agent (not built, or the backend's `agent: false`) and on a read-only root filesystem (the
 * binary cannot be put in).
 */
import * as E from 'fp-ts/lib/Either.js';
import { unavailable, unsupported, type TaskSpec, type Unsupported } from '@lessl/core';
import type { RunSink, StartedRun } from '@lessl/kit';
import { agentBinary, agentTar } from './agent/binary.js';
import { ExecForwarder, type PortReach } from './agent/forward-exec.js';
import { HostReach } from './agent/forward-host.js';
import { sinkOver, type ContainerRuns } from './executor-follow.js';

/** Whether the run's spec declares ports. */
export const servesPorts = (spec: TaskSpec): boolean => (spec.ports ?? []).length > 0;

/**
 * `Unsupported` naming `spec.ports` when the task declares ports this executor cannot reach: no
 * agent (`agentOn`: the backend's `agent` option), or a read-only root filesystem.
 */
export const portsRefusal = (
  task: string,
  spec: TaskSpec,
  agentOn: boolean,
  readOnlyRootfs: boolean,
): E.Either<Unsupported, void> => {
  if (!servesPorts(spec)) return E.right(undefined);
  const why =
    !agentOn || agentBinary() === undefined
      ? 'ports are reached through the in-container agent, which is not built or is turned off (agent: false)'
      : readOnlyRootfs
        ? 'the port forwarder cannot be put into a read-only root filesystem (readOnlyRootfs)'
        : undefined;
  return why === undefined ? E.right(undefined) : E.left(unsupported(task, 'spec.ports', why));
};

/** Puts the agent's binary into a container (created or running) for a run that serves ports. */
export const putForwarder = async (runs: ContainerRuns, containerId: string, sink: RunSink): Promise<void> => {
  const bin = agentBinary();
  if (!servesPorts(sink.spec) || bin === undefined) return;
  await runs.containers.putArchive(containerId, agentTar(bin), '/');
};

/**
 * The sink of a run whose spec declares ports: the run it starts connects through `reach`
 * (made on the first connect), and its end closes it first. Without ports: `sink` itself.
 */
export const reachingPorts = (sink: RunSink, reachOf: () => PortReach): RunSink => {
  if (!servesPorts(sink.spec)) return sink;
  let reach: PortReach | undefined;
  let ended = false;
  const connect: NonNullable<StartedRun['connect']> = (port, signal) => {
    if (ended) return Promise.resolve(E.left(unavailable(sink.task, `port ${port} of task ${sink.task}: the task ended`)));
    reach ??= reachOf();
    return reach.connect(port, signal);
  };
  return sinkOver(sink, {
    started: (run) => sink.started({ ...run, connect }),
    end: (outcome) => {
      ended = true;
      reach?.close();
      return sink.end(outcome);
    },
  });
};

/**
 * A run's ports in `containerId`: from this machine when it can be (agent/forward-host.ts, unless
 * the backend's `directPorts` is false), else the engine's way (`engineWay`). Closed at the run's
 * end or when the backend closes (a stream would hold the embedding process open; the task runs on).
 */
export const portReach =
  (runs: ContainerRuns, containerId: string, task: string, engineWay: () => PortReach): (() => PortReach) =>
  () => {
    const r = runs.directPorts ? new HostReach(runs.hostPorts, runs.engine, containerId, task, engineWay) : engineWay();
    runs.reaches.add(r);
    return {
      connect: (port, signal) => r.connect(port, signal),
      close: () => {
        runs.reaches.delete(r);
        r.close();
      },
    };
  };

/** A run's ports (see `portReach`); the engine's way is an exec'd forwarder in `containerId`. */
export const execReach = (runs: ContainerRuns, containerId: string, task: string): (() => PortReach) =>
  portReach(runs, containerId, task, () => new ExecForwarder(runs.engine, containerId, task));
