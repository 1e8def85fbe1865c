/**
 * Executors are containers. A commit's steps become Docker calls:
 * - join/leave of images and volumes are recorded; on a running executor they are Unsupported
 *   (Docker cannot change a running container's root filesystem or mounts);
 * - bind of a task on an executor with no running container creates the container from the
 *   joined image, volumes and options with the task as its process, and starts it. A `daemon`
 *   task keeps running (bound); any other task runs to its end during the commit: its result
 *   (exit code, stdout/stderr in time order, capped) is in the step result, and it ends unbound;
 * - bind of a task on a running executor runs it with exec (one-shot);
 * - unbind of the running task stops the container (grace period, then kill) and removes it.
 * A failing step undoes the earlier ones (stops and removes the container it started).
 *
 * Hardening defaults (each overridable through `ExecutorOptions` / `options.backend`):
 * network `none`, never privileged, every capability dropped (`capAdd` adds back), no-new-privileges,
 * an init process, pids limit 256, memory limit 512 MiB.
 */
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import {
  invalidEntry,
  runtimeError,
  unsupported,
  type AnyError,
  type DeleteError,
  type Element,
  type MemberState,
  type StepResult,
  type TaskResult,
  type TaskSpec,
} from '@lessl/core';
import type { CommitPlan, CompositionRecord, DriverCommit, ExecutorDriver, Intent, PlanStep } from '@lessl/level';
import type { Engine } from './engine.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { Demux, type OutputChunk } from './output.js';
import { containerName, LABEL } from './names.js';

/** Defaults of the hardening and limits. */
export const DEFAULTS = {
  memoryBytes: 512 * 1024 * 1024,
  pids: 256,
  outputBytes: 1024 * 1024,
  stopGraceSeconds: 10,
} as const;

/** Backend options of an executor (`ExecutorOptions.backend`). */
export interface DockerExecutorOptions {
  /** Capabilities to add back after dropping all (default none). */
  readonly capAdd?: readonly string[];
  /** Seconds between SIGTERM and SIGKILL when a task is unbound (default 10). */
  readonly stopGraceSeconds?: number;
  /** Disable no-new-privileges (default: enabled). */
  readonly allowNewPrivileges?: boolean;
}

/** Who receives streamed task output. */
export type OutputListener = (executor: string, task: string, chunk: OutputChunk) => void;

/** Test hook: make a step fail. */
export type FaultHook = (step: PlanStep) => AnyError | undefined;

interface XState {
  containerId: string | null;
  mainTask: string | null;
  running: boolean;
}

/** The executor driver. */
export const executorDriver = (engine: Engine, emit: OutputListener, faults?: FaultHook): ExecutorDriver => {
  const d = engine.docker;

  const removeContainer = (id: string): Promise<void> => engine.removeQuietly(d.getContainer(id));

  const specOf = (plan: CommitPlan, task: string): TaskSpec => plan.elements.get(task)?.attributes.spec as TaskSpec;

  const containerConfig = (plan: CommitPlan, task: string, spec: TaskSpec): E.Either<AnyError, Docker.ContainerCreateOptions> => {
    const image = plan.after.find((m) => m.id.kind === 'image');
    if (image === undefined)
      return E.left(
        invalidEntry(
          `no storage is mapped to /: ${plan.executor.key} has no image joined as its root filesystem, and a Docker container needs one`,
          plan.executor.key,
          ['rootfs'],
        ),
      );
    const imageId = String(plan.elements.get(image.id.key)?.attributes.imageId ?? '');
    const o = plan.options;
    const b = (o.backend ?? {}) as DockerExecutorOptions;
    const lim = spec.limits ?? {};
    const memory = lim.memoryBytes ?? o.memoryBytes ?? DEFAULTS.memoryBytes;
    const cpus = lim.cpus ?? o.cpus;
    return E.right({
      name: containerName(engine.instance, plan.executor, randomBytes(3).toString('hex')),
      Image: imageId,
      Cmd: [...spec.cmd],
      Entrypoint: [],
      Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
      ...(spec.pwd === undefined ? {} : { WorkingDir: spec.pwd }),
      ...(spec.user === undefined ? {} : { User: spec.user }),
      Labels: { [LABEL.id]: plan.executor.key, [LABEL.registry]: engine.instance, [LABEL.task]: task },
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      OpenStdin: false,
      HostConfig: {
        NetworkMode: o.network ?? 'none',
        Privileged: false,
        CapDrop: ['ALL'],
        CapAdd: [...(b.capAdd ?? [])],
        SecurityOpt: b.allowNewPrivileges === true ? [] : ['no-new-privileges'],
        Init: true,
        PidsLimit: lim.pids ?? o.pids ?? DEFAULTS.pids,
        Memory: memory,
        MemorySwap: memory,
        ...(cpus === undefined ? {} : { NanoCpus: Math.round(cpus * 1e9) }),
        ReadonlyRootfs: o.readOnlyRootfs === true,
        Mounts: plan.after
          .filter((m) => m.id.kind === 'volume')
          .map((m) => ({
            Type: 'volume' as const,
            Source: String(plan.elements.get(m.id.key)?.attributes.volumeName ?? ''),
            Target: m.mountpoint ?? '/data',
            ReadOnly: m.readOnly,
          })),
      },
    });
  };

  /** Runs a task as the container's process. Daemon: started and left running. Else: to its end. */
  const runMain = async (
    plan: CommitPlan,
    task: string,
    spec: TaskSpec,
  ): Promise<E.Either<AnyError, { containerId: string; result?: TaskResult }>> => {
    const cfg = containerConfig(plan, task, spec);
    if (E.isLeft(cfg)) return cfg;
    let c: Docker.Container;
    try {
      c = await d.createContainer(cfg.right);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(
        statusOf(err) === 404
          ? runtimeError(task, `the image of ${plan.executor.key} is gone from Docker`, err)
          : fromDocker(task, err),
      );
    }
    const oneShot = spec.daemon !== true;
    if (oneShot) engine.expected.add(c.id);
    const demux = new Demux(spec.limits?.outputBytes ?? DEFAULTS.outputBytes, (chunk) => emit(plan.executor.key, task, chunk));
    let stream: Readable;
    try {
      stream = (await c.attach({ stream: true, stdout: true, stderr: true })) as unknown as Readable;
    } catch (err) {
      await removeContainer(c.id);
      return E.left(fromDocker(task, err));
    }
    const drained = demux.drain(stream);
    try {
      await c.start();
    } catch (err) {
      stream.destroy();
      await removeContainer(c.id);
      if (!isDockerError(err)) throw err;
      const code = statusOf(err);
      return E.left(
        code === 400 || code === 500
          ? invalidEntry(
              `task ${task} cannot start: ${(err as { json?: { message?: string } }).json?.message ?? (err as Error).message}`,
              task,
              ['spec.cmd'],
            )
          : fromDocker(task, err),
      );
    }
    if (!oneShot) {
      stream.on('error', () => undefined);
      return E.right({ containerId: c.id });
    }
    let reason: TaskResult['reason'] = 'exited';
    const deadline = spec.limits?.deadlineMs;
    const timer =
      deadline === undefined
        ? undefined
        : setTimeout(() => {
            reason = 'deadline';
            c.kill().catch(() => undefined);
          }, deadline);
    try {
      const waited = c.wait() as Promise<{ StatusCode: number }>;
      await drained;
      const w = await waited;
      const info = await c.inspect().catch(() => undefined);
      if (info?.State.OOMKilled === true) reason = 'oom';
      return E.right({ containerId: c.id, result: demux.result(w.StatusCode, reason) });
    } catch (err) {
      return E.left(fromDocker(task, err));
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      await removeContainer(c.id);
    }
  };

  /** Runs a one-shot task inside a running container with exec. */
  const runExec = async (
    plan: CommitPlan,
    containerId: string,
    task: string,
    spec: TaskSpec,
  ): Promise<E.Either<AnyError, TaskResult>> => {
    const demux = new Demux(spec.limits?.outputBytes ?? DEFAULTS.outputBytes, (chunk) => emit(plan.executor.key, task, chunk));
    try {
      const exec = await d.getContainer(containerId).exec({
        Cmd: [...spec.cmd],
        Env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
        ...(spec.pwd === undefined ? {} : { WorkingDir: spec.pwd }),
        ...(spec.user === undefined ? {} : { User: spec.user }),
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
      });
      const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Readable;
      const ended: { reason: TaskResult['reason'] } = { reason: 'exited' };
      const deadline = spec.limits?.deadlineMs;
      const timer =
        deadline === undefined
          ? undefined
          : setTimeout(() => {
              ended.reason = 'deadline';
              stream.destroy();
            }, deadline);
      await demux.drain(stream);
      if (timer !== undefined) clearTimeout(timer);
      const info = await exec.inspect();
      return E.right(demux.result(ended.reason === 'deadline' ? null : (info.ExitCode ?? null), ended.reason));
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(fromDocker(task, err));
    }
  };

  const stopMain = async (containerId: string, grace: number): Promise<number | null> => {
    engine.expected.add(containerId);
    const c = d.getContainer(containerId);
    await c.stop({ t: grace }).catch(() => undefined);
    const info = await c.inspect().catch(() => undefined);
    await removeContainer(containerId);
    return info?.State.ExitCode ?? null;
  };

  /**
   * The executor's container state. The registry's record is kept current by the Docker event
   * watcher, so a running record is trusted without a round trip; if the container died a moment
   * ago, exec answers 409, mapped to Conflict, and the caller retries from a fresh handle.
   */
  const live = async (attrs: Readonly<Record<string, unknown>>): Promise<E.Either<AnyError, XState>> => {
    const containerId = typeof attrs.containerId === 'string' ? attrs.containerId : null;
    const mainTask = typeof attrs.mainTask === 'string' ? attrs.mainTask : null;
    if (containerId === null) return E.right({ containerId, mainTask, running: false });
    if (attrs.state === 'running') return E.right({ containerId, mainTask, running: true });
    return E.right({ containerId, mainTask, running: false });
  };

  const describe = (plan: CommitPlan, x: XState): Record<string, unknown> => ({
    state: x.running ? 'running' : 'stopped',
    containerId: x.running ? x.containerId : null,
    mainTask: x.running ? x.mainTask : null,
    rootfs: plan.after.find((m) => m.id.kind === 'image')?.id.key ?? null,
    mounts: plan.after
      .filter((m) => m.id.kind === 'volume')
      .map((m) => ({ volume: m.id.key, at: m.mountpoint, readOnly: m.readOnly })),
    readOnlyRootfs: plan.options.readOnlyRootfs === true,
  });

  const commit = async (plan: CommitPlan): Promise<DriverCommit> => {
    const st = await live(plan.attributes);
    if (E.isLeft(st)) return E.left({ error: st.left, results: [] });
    const x = st.right;
    const grace = ((plan.options.backend ?? {}) as DockerExecutorOptions).stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;
    const results: StepResult[] = [];
    const states: Record<string, MemberState> = {};
    const undo: (() => Promise<void>)[] = [];
    const failWith = async (step: PlanStep, error: AnyError): Promise<DriverCommit> => {
      results.push({ id: step.id, op: step.op, status: 'ERROR', error });
      for (const u of undo.reverse()) await u().catch(() => undefined);
      return E.left({ error, results });
    };
    for (const step of plan.steps) {
      const fault = faults?.(step);
      if (fault !== undefined) return failWith(step, fault);
      const kind = step.member?.id.kind;
      try {
        if (step.op === 'create') results.push({ id: step.id, op: 'create', status: 'SUCCESS' });
        else if ((step.op === 'join' || step.op === 'leave') && (kind === 'image' || kind === 'volume')) {
          if (x.running)
            return failWith(
              step,
              unsupported(
                step.id,
                `${step.op} of ${kind}s on a running executor`,
                'Docker cannot change the storage of a running container; unbind its task first',
              ),
            );
          results.push({ id: step.id, op: step.op, status: 'SUCCESS' });
        } else if (step.op === 'unbind' && kind === 'task' && x.running && x.mainTask === step.id && x.containerId !== null) {
          const code = await stopMain(x.containerId, grace);
          x.running = false;
          x.containerId = null;
          x.mainTask = null;
          results.push({
            id: step.id,
            op: 'unbind',
            status: 'SUCCESS',
            task: {
              exitCode: code,
              stdout: new Uint8Array(),
              stderr: new Uint8Array(),
              output: [],
              truncated: false,
              reason: 'stopped',
            },
          });
        } else if (step.op === 'bind' && kind === 'task') {
          const spec = specOf(plan, step.id);
          if (x.running && x.containerId !== null) {
            if (spec.daemon === true)
              return failWith(
                step,
                unsupported(
                  step.id,
                  'a daemon task exec’d into a running executor',
                  'Docker cannot stop an exec process; bind it on a stopped executor',
                ),
              );
            const r = await runExec(plan, x.containerId, step.id, spec);
            if (E.isLeft(r)) return failWith(step, r.left);
            results.push({ id: step.id, op: 'bind', status: 'SUCCESS', task: r.right });
            states[step.id] = 'unbound';
          } else {
            if (x.containerId !== null) await removeContainer(x.containerId);
            const r = await runMain(plan, step.id, spec);
            if (E.isLeft(r)) return failWith(step, r.left);
            if (r.right.result === undefined) {
              const cid = r.right.containerId;
              x.running = true;
              x.containerId = cid;
              x.mainTask = step.id;
              undo.push(async () => {
                await stopMain(cid, 0);
              });
              results.push({ id: step.id, op: 'bind', status: 'SUCCESS' });
            } else {
              results.push({ id: step.id, op: 'bind', status: 'SUCCESS', task: r.right.result });
              states[step.id] = 'unbound';
            }
          }
        } else results.push({ id: step.id, op: step.op, status: 'SUCCESS' });
      } catch (err) {
        return failWith(
          step,
          isDockerError(err) ? fromDocker(step.id, err) : runtimeError(step.id, `step failed: ${String(err)}`, err),
        );
      }
    }
    return E.right({ results, attributes: describe(plan, x), states });
  };

  return {
    commit,
    async undo(plan, attributes) {
      const id = attributes.containerId;
      if (typeof id === 'string' && id !== plan.attributes.containerId) await stopMain(id, 0);
    },
    async destroy(el: Element, _comp: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>> {
      try {
        const cs = await d.listContainers({
          all: true,
          filters: { label: [`${LABEL.id}=${el.id.key}`, `${LABEL.registry}=${engine.instance}`] },
        });
        for (const c of cs) await removeContainer(c.Id);
        return E.right(undefined);
      } catch (err) {
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async recover(intent: Intent): Promise<void> {
      const cs = await d
        .listContainers({ all: true, filters: { label: [`${LABEL.id}=${intent.id}`, `${LABEL.registry}=${engine.instance}`] } })
        .catch(() => []);
      for (const c of cs) await removeContainer(c.Id);
    },
  };
};
