/**
 * Executors are containers. A commit's steps become Docker calls:
 * - join/leave of images and volumes are recorded; on a running executor they are Unsupported
 *   (Docker cannot change a running container's root filesystem or mounts);
 * - bind of a task on an executor with no running container creates the container from the
 *   joined image, volumes and options with the task as its process, and starts it; the commit
 *   returns once it has started (docs/lifecycle.md). A follower then hands its output to the
 *   runtime as it arrives, reads the exit code once the output is drained, removes the container
 *   of a one-shot task (a daemon's stays for inspection until the next bind or delete) and
 *   reports the end;
 * - bind of a task on a running executor runs it with exec, followed the same way; killing it
 *   signals every process in the container that carries the exec's marker in its environment;
 * - unbind of a running task stops it (TERM, grace period, KILL); the main container is removed.
 * A failing step undoes the earlier ones (stops and removes the container it started).
 *
 * Hardening defaults (each overridable through `ExecutorOptions` / `options.backend`):
 * network `none`, never privileged, every capability dropped (`capAdd` adds back), no-new-privileges,
 * an init process, pids limit 256, memory limit 512 MiB.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { pack } from 'tar-stream';
import {
  aborted,
  describeCause,
  invalidEntry,
  restarts,
  runtimeError,
  unsupported,
  type AnyError,
  type DeleteError,
  type Element,
  type EndReason,
  type TaskSpec,
  type TaskStatus,
  type ExecutorOptions,
} from '@lessl/core';
import type {
  CommitPlan,
  CompositionRecord,
  DriverCommit,
  DriverStepResult as StepResult,
  DriverTaskResult as TaskResult,
  ExecutorDriver,
  Intent,
  PlanStep,
  RunSink,
  SecretFile,
} from '@lessl/level';
import type { Engine } from './engine.js';
import { fromDocker, isConnectionError, isDockerError, statusOf } from './errors.js';
import { Demux, StampedLog } from './output.js';
import { containerName, LABEL } from './names.js';
import { warmKey, type ContainerBase } from './pool.js';

/** Defaults of the hardening and limits. */
export const DEFAULTS = {
  memoryBytes: 512 * 1024 * 1024,
  pids: 256,
  outputBytes: 1024 * 1024,
  stopGraceSeconds: 10,
} as const;

/**
 * io-ts codec of the Docker backend's executor options (`ExecutorOptions.backend`), decoded
 * exactly by the composer at `handle`: unknown keys and wrong types are `InvalidEntry`.
 * - `capAdd`: capabilities to add back after dropping all (default none; names like `NET_RAW`);
 * - `stopGraceSeconds`: seconds between SIGTERM and SIGKILL when a task is unbound (default 10);
 * - `allowNewPrivileges`: disable no-new-privileges (default: enabled);
 * - `host`: the host to run on (with several hosts; its volumes' host wins and must agree);
 * - `constraints`: labels the host must carry (placement, docs/hosts.md).
 */
export const DockerExecutorOptionsC = t.partial({
  capAdd: t.array(t.refinement(t.string, (c) => /^[A-Z_]+$/.test(c), 'Capability')),
  stopGraceSeconds: t.refinement(t.number, (n) => Number.isInteger(n) && n >= 0, 'NonNegativeInt'),
  allowNewPrivileges: t.boolean,
  host: t.string,
  constraints: t.record(t.string, t.string),
});
/** Backend options of an executor (`ExecutorOptions.backend`). */
export type DockerExecutorOptions = t.TypeOf<typeof DockerExecutorOptionsC>;

/** The Docker options of an executor, decoded (they were validated at `handle`; nothing is read by cast). */
export const backendOf = (o: ExecutorOptions): DockerExecutorOptions => {
  const r = DockerExecutorOptionsC.decode(o.backend ?? {});
  return E.isRight(r) ? r.right : {};
};

/** Owner and mode of credential files: the task's numeric user owns them (0400), named users read them (0444). */
const fileOwner = (user: string | undefined): { uid: number; gid: number; mode: number } => {
  const m = /^(\d+)(?::(\d+))?$/.exec(user ?? '0');
  if (m === null) return { uid: 0, gid: 0, mode: 0o444 };
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]), mode: 0o400 };
};

/** A tar of credential files (missing parent directories are made by Docker). */
const secretTar = (files: readonly SecretFile[], user: string | undefined): NodeJS.ReadableStream => {
  const p = pack();
  const { uid, gid, mode } = fileOwner(user);
  for (const f of files) p.entry({ name: f.path.slice(1), mode, uid, gid }, Buffer.from(f.data));
  p.finalize();
  return p as unknown as NodeJS.ReadableStream;
};

/** Test hook: make a step fail. */
export type FaultHook = (step: PlanStep) => AnyError | undefined;

interface XState {
  containerId: string | null;
  mainTask: string | null;
  running: boolean;
  /** Containers this commit replaced: removed once it is durable (kept on a rollback). */
  retired?: string[];
}

/** The process environment: the spec's, then the run's credentials (which win). */
export const envOf = (sink: RunSink): string[] =>
  Object.entries({ ...sink.spec.env, ...sink.secrets.env }).map(([k, v]) => `${k}=${v}`);

/** Docker's restart policy for a task (only daemons have one: the spec decoder refuses it elsewhere). */
const restartPolicyOf = (spec: TaskSpec): { Name: string; MaximumRetryCount?: number } => {
  const r = spec.restart;
  if (r === undefined || r.policy === 'never') return { Name: 'no' };
  return r.policy === 'always' ? { Name: 'always' } : { Name: 'on-failure', MaximumRetryCount: r.maxRetries ?? 0 };
};

/** A task's resource limits (`spec.limits`). */
type Limits = NonNullable<TaskSpec['limits']>;

/**
 * The container-level settings of an executor: its image, the hardening defaults, limits (the
 * task's over the executor's) and mounts. A warm container is made with these, and a task takes
 * one only when its own are equal (see pool.ts).
 */
export const containerBase = (
  imageId: string,
  o: ExecutorOptions,
  lim: Limits,
  mounts: Docker.MountSettings[] = [],
): ContainerBase => {
  const b = backendOf(o);
  const memory = lim.memoryBytes ?? o.memoryBytes ?? DEFAULTS.memoryBytes;
  const cpus = lim.cpus ?? o.cpus;
  return {
    Image: imageId,
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
      Mounts: mounts,
    },
  };
};

/** The executor driver. */
export const executorDriver = (engine: Engine, faults?: FaultHook): ExecutorDriver => {
  const d = engine.docker;
  /** Followers still reading a stream; closed when the backend closes. */
  const followers = new Set<Readable>();
  /** Aborts the waits on main containers when the backend closes (the next open finds their ends). */
  const closing = new AbortController();
  const waitEnd = (c: Docker.Container): Promise<{ StatusCode: number }> =>
    c.wait({ abortSignal: closing.signal }) as Promise<{ StatusCode: number }>;
  /**
   * Executors made in this process that have only run in warm containers (which carry no
   * `lessl.id` label): deleting one need not list labelled containers, a round trip on the warm
   * path's clean-up. A cold container or a rolled-back commit takes the executor out.
   */
  const warmOnly = new Set<string>();

  const removeContainer = (id: string): Promise<void> => engine.removeQuietly(d.getContainer(id));

  const specOf = (plan: CommitPlan, task: string): TaskSpec => plan.elements.get(task)?.attributes.spec as TaskSpec;

  const containerConfig = (plan: CommitPlan, sink: RunSink): E.Either<AnyError, Docker.ContainerCreateOptions> => {
    const { task, spec } = sink;
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
    const mounts = plan.after
      .filter((m) => m.id.kind === 'volume')
      .map((m) => ({
        Type: 'volume' as const,
        Source: String(plan.elements.get(m.id.key)?.attributes.volumeName ?? ''),
        Target: m.mountpoint ?? '/data',
        ReadOnly: m.readOnly,
      }));
    const base = containerBase(imageId, plan.options, spec.limits ?? {}, mounts);
    return E.right({
      name: containerName(engine.instance, plan.executor, randomBytes(3).toString('hex')),
      Image: base.Image,
      Cmd: [...spec.cmd],
      Entrypoint: [],
      Env: envOf(sink),
      ...(spec.pwd === undefined ? {} : { WorkingDir: spec.pwd }),
      ...(spec.user === undefined ? {} : { User: spec.user }),
      Labels: { [LABEL.id]: plan.executor.key, [LABEL.registry]: engine.instance, [LABEL.task]: task },
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      OpenStdin: false,
      HostConfig: {
        ...base.HostConfig,
        RestartPolicy: restartPolicyOf(spec),
        ...(spec.log?.destination === 'none' ? { LogConfig: { Type: 'none', Config: {} } } : {}),
      },
    });
  };

  /**
   * Ends a container's process: KILL at once, or TERM then KILL after the grace period. A
   * container Docker restarts is stopped (TERM, KILL at once), as a kill would be restarted.
   */
  const killContainer = async (id: string, signal: 'TERM' | 'KILL', graceMs: number, restartable: boolean): Promise<void> => {
    const c = d.getContainer(id);
    if (signal === 'KILL' && !restartable) await c.kill({ signal: 'KILL' });
    else await c.stop({ t: signal === 'KILL' ? 0 : Math.ceil(graceMs / 1000) });
  };

  /** Hands a stream to `demux` until it ends (closed early when the backend closes). */
  const drain = async (stream: Readable, demux: Demux): Promise<void> => {
    followers.add(stream);
    await demux.drain(stream);
    followers.delete(stream);
  };

  /** A container's log since `since`, live with `follow` (without it, dockerode answers one buffer). */
  const logStream = async (c: Docker.Container, follow: boolean, since?: string): Promise<Readable> => {
    const opts = { follow, stdout: true, stderr: true, ...(since === undefined ? {} : { since, timestamps: true }) };
    const got = (await c.logs(opts as { follow: true })) as unknown;
    return Buffer.isBuffer(got) ? Readable.from([got]) : (got as Readable);
  };

  /**
   * Reports a main container's end; a one-shot task's container is removed once the end is
   * durable and before waiters wake (a crash in between leaves a container reconciliation
   * removes, never a lost result).
   */
  const endMain = async (sink: RunSink, c: Docker.Container, exitCode: number | null, reason: EndReason): Promise<void> => {
    const oneShot = sink.spec.daemon !== true;
    if (oneShot) engine.expected.add(c.id);
    await sink.end({
      exitCode,
      reason,
      executor: oneShot ? { state: 'stopped', containerId: null, mainTask: null } : { state: 'stopped', mainTask: null },
      ...(oneShot ? { cleanup: () => removeContainer(c.id) } : {}),
    });
  };

  /**
   * Follows a main container to its end: output drained first, then the exit code; a one-shot
   * task's container is removed once its end is durable.
   */
  const followMain = async (sink: RunSink, c: Docker.Container, stream: Readable | undefined, demux: Demux): Promise<void> => {
    if (stream !== undefined) await drain(stream, demux);
    let exitCode: number | null = null;
    let reason: EndReason = 'exited';
    try {
      exitCode = (await waitEnd(c)).StatusCode;
      const info = await c.inspect();
      if (info.State.OOMKilled) reason = 'oom';
    } catch (err) {
      if (statusOf(err) === 404) reason = 'lost';
      else if (isConnectionError(err) || closing.signal.aborted) return; // the engine went away or the backend closed: the next open finds the end
    }
    if (reason === 'exited' && demux.notFound(exitCode)) reason = 'not-found';
    await endMain(sink, c, exitCode, reason);
  };

  /**
   * Follows a daemon that Docker restarts (its restart policy): every run's output, read from
   * Docker's log (each read ends when a run ends; the next starts where the last stopped), until
   * the container stops for good (policy exhausted, or stopped by lessl). One lessl run.
   */
  const followRestarting = async (sink: RunSink, c: Docker.Container, log: StampedLog | undefined): Promise<void> => {
    let info: Docker.ContainerInspectInfo;
    try {
      for (;;) {
        if (log === undefined) await waitEnd(c);
        else await drain(await logStream(c, true, log.since()), log.demux);
        if (closing.signal.aborted) return; // the next open follows it again
        info = await c.inspect();
        if (!info.State.Running && !info.State.Restarting) break;
        if (info.State.Restarting) await new Promise((r) => setTimeout(r, 100));
      }
      if (log !== undefined) await drain(await logStream(c, false, log.since()), log.demux);
    } catch (err) {
      if (statusOf(err) === 404) return endMain(sink, c, null, 'lost');
      if (isConnectionError(err) || closing.signal.aborted) return; // the engine went away or the backend closed: the next open finds the end
      throw err;
    }
    await endMain(sink, c, info.State.ExitCode ?? null, info.State.OOMKilled ? 'oom' : 'exited');
  };

  /** Follows a started main container, restarted by Docker or not; reads no output for `log: none`. */
  const follow = (sink: RunSink, c: Docker.Container, attached: Readable | undefined, skip = 0): void => {
    const reads = sink.spec.log?.destination !== 'none';
    const out = (st: 'stdout' | 'stderr', data: Uint8Array): void => sink.output(st, data);
    const done = restarts(sink.spec)
      ? followRestarting(sink, c, reads ? new StampedLog(out, skip) : undefined)
      : followMain(sink, c, attached, new Demux(out, skip));
    void done.catch(() => undefined);
  };

  /** Puts a run's credential files into a container (created or running) before its process starts. */
  const putSecrets = async (c: Docker.Container, sink: RunSink): Promise<void> => {
    if (sink.secrets.files.length === 0) return;
    await c.putArchive(secretTar(sink.secrets.files, sink.spec.user), { path: '/' });
  };

  /**
   * A warm container for a one-shot task whose container settings match a pool profile and that
   * mounts no volume (Docker cannot add mounts to a running container), or undefined (cold path).
   */
  const takeWarm = (cfg: Docker.ContainerCreateOptions, sink: RunSink): string | undefined => {
    const pool = engine.pool;
    if (pool === undefined || sink.spec.daemon === true || restarts(sink.spec) || sink.spec.log?.destination === 'none')
      return undefined;
    const { RestartPolicy: _restart, LogConfig: _log, ...host } = cfg.HostConfig ?? {};
    if ((host.Mounts ?? []).length > 0) return undefined;
    const key = warmKey({ Image: String(cfg.Image), HostConfig: host });
    return pool.has(key) ? pool.take(key) : undefined;
  };

  /** Creates and starts the main container of a task; the commit returns once it runs. */
  const startMain = async (plan: CommitPlan, sink: RunSink): Promise<E.Either<AnyError, string>> => {
    const task = sink.task;
    const cfg = containerConfig(plan, sink);
    if (E.isLeft(cfg)) return cfg;
    const image = plan.after.find((m) => m.id.kind === 'image')?.id.key;
    if (image !== undefined) engine.lastUse.set(image, Date.now());
    for (let warm = takeWarm(cfg.right, sink); warm !== undefined; warm = takeWarm(cfg.right, sink)) {
      const r = await startExec(warm, sink, true);
      if (E.isRight(r)) {
        if (!plan.exists) warmOnly.add(plan.executor.key);
        return E.right(warm);
      }
      // Docker answers 404 (gone) or 409 (not running, paused) to an exec into a container that
      // died while idle (fromDocker: NotFound, Conflict): remove it and take the next one
      const dead = r.left._tag === 'NotFound' || r.left._tag === 'Conflict';
      engine.pool?.release(warm, dead);
      if (!dead) return r;
    }
    warmOnly.delete(plan.executor.key);
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
    // a restarted daemon's output is read from Docker's log, and `log: none` reads nothing: no attach
    const attach = !restarts(sink.spec) && sink.spec.log?.destination !== 'none';
    let stream: Readable | undefined;
    try {
      await putSecrets(c, sink);
      if (attach) stream = (await c.attach({ stream: true, stdout: true, stderr: true })) as unknown as Readable;
    } catch (err) {
      await removeContainer(c.id);
      return E.left(fromDocker(task, err));
    }
    try {
      await c.start();
    } catch (err) {
      stream?.destroy();
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
    const again = restarts(sink.spec);
    sink.started({ process: { containerId: c.id }, kill: (sig, grace) => killContainer(c.id, sig, grace, again) });
    follow(sink, c, stream);
    return E.right(c.id);
  };

  /**
   * Signals an exec'd process and its children: inside the container, every process whose
   * environment carries the exec's marker (Docker has no call to signal an exec). TERM goes to
   * each once; KILL stops them all (so none forks meanwhile), kills them, and walks `/proc` again
   * until none is left (a shell the walk reached after its children forks no more).
   */
  const signalExec = async (containerId: string, marker: string, user: string | undefined, signal: 'TERM' | 'KILL') => {
    const pids = `pids() { for p in /proc/[0-9]*; do grep -qs "LESSL_EXEC=${marker}" "$p/environ" && echo "\${p#/proc/}"; done; }`;
    const script =
      signal === 'TERM'
        ? `${pids}; kill -TERM $(pids) 2>/dev/null; true`
        : `${pids}; i=0; while [ $i -lt 100 ]; do l=$(pids); [ -z "$l" ] && break; kill -STOP $l 2>/dev/null; kill -KILL $l 2>/dev/null; i=$((i+1)); done; true`;
    const k = await d.getContainer(containerId).exec({
      Cmd: ['sh', '-c', script],
      AttachStdout: true,
      AttachStderr: true,
      ...(user === undefined ? {} : { User: user }),
    });
    const s = (await k.start({ hijack: true, stdin: false })) as unknown as Readable;
    await new Demux(() => undefined).drain(s);
  };

  /**
   * Ends an exec'd task: KILL at once, or TERM, then (after the grace period, or as soon as the
   * exec's own process is gone) KILL for whatever of the task is left (background processes too).
   */
  const killExec = async (
    containerId: string,
    exec: Docker.Exec,
    marker: string,
    user: string | undefined,
    signal: 'TERM' | 'KILL',
    graceMs: number,
  ): Promise<void> => {
    const running = async (): Promise<boolean> => (await exec.inspect().catch(() => ({ Running: false }))).Running;
    if (signal === 'TERM') {
      await signalExec(containerId, marker, user, 'TERM');
      const until = Date.now() + graceMs;
      while (Date.now() < until && (await running())) await new Promise((r) => setTimeout(r, 100));
    }
    await signalExec(containerId, marker, user, 'KILL');
  };

  /** Reports an exec's end; a warm container's task ends its container too (one task per container). */
  const endExec = async (sink: RunSink, containerId: string, warm: boolean, exitCode: number | null, reason: EndReason) => {
    if (!warm) return sink.end({ exitCode, reason });
    engine.expected.add(containerId);
    await sink.end({
      exitCode,
      reason,
      executor: { state: 'stopped', containerId: null, mainTask: null },
      cleanup: async () =>
        engine.pool === undefined
          ? engine.removeAfter(Promise.resolve(), 'container', containerId)
          : engine.pool.release(containerId),
    });
  };

  /** Follows an exec to its end: output drained, then the exit code. */
  const followExec = async (
    sink: RunSink,
    containerId: string,
    warm: boolean,
    exec: Docker.Exec,
    stream: Readable,
    demux: Demux,
  ): Promise<void> => {
    await drain(stream, demux);
    let exitCode: number | null = null;
    let reason: EndReason = 'exited';
    try {
      exitCode = (await exec.inspect()).ExitCode ?? null;
    } catch (err) {
      if (statusOf(err) === 404) reason = 'lost';
      else if (isConnectionError(err)) return;
    }
    if (reason === 'exited' && demux.notFound(exitCode)) reason = 'not-found';
    await endExec(sink, containerId, warm, exitCode, reason);
  };

  /**
   * Runs a task inside a running container with exec; returns once it has started. In a warm
   * container (`warm`), the task is the container's only one: its end removes the container.
   */
  const startExec = async (containerId: string, sink: RunSink, warm = false): Promise<E.Either<AnyError, void>> => {
    const marker = randomBytes(8).toString('hex');
    const spec = sink.spec;
    try {
      await putSecrets(d.getContainer(containerId), sink);
      const exec = await d.getContainer(containerId).exec({
        Cmd: [...spec.cmd],
        Env: [...envOf(sink), `LESSL_EXEC=${marker}`],
        ...(spec.pwd === undefined ? {} : { WorkingDir: spec.pwd }),
        ...(spec.user === undefined ? {} : { User: spec.user }),
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
      });
      const stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Readable;
      sink.started({
        process: { containerId, execId: exec.id, marker, ...(warm ? { warm } : {}) },
        kill: (sig, grace) => killExec(containerId, exec, marker, spec.user, sig, grace),
      });
      const demux = new Demux((s, data) => sink.output(s, data));
      void followExec(sink, containerId, warm, exec, stream, demux).catch(() => undefined);
      return E.right(undefined);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(fromDocker(sink.task, err));
    }
  };

  /** Stops a main container and removes it (unless `keep`); answers its exit code. */
  const stopMain = async (containerId: string, grace: number, keep = false): Promise<number | null> => {
    engine.expected.add(containerId);
    const c = d.getContainer(containerId);
    await c.stop({ t: grace }).catch(() => undefined);
    const info = await c.inspect().catch(() => undefined);
    if (!keep) await removeContainer(containerId);
    return info?.State.ExitCode ?? null;
  };

  /** The executor's container state, as recorded (the followers keep the record current). */
  const recorded = (attrs: Readonly<Record<string, unknown>>): XState => {
    const containerId = typeof attrs.containerId === 'string' ? attrs.containerId : null;
    const mainTask = typeof attrs.mainTask === 'string' ? attrs.mainTask : null;
    return { containerId, mainTask, running: containerId !== null && attrs.state === 'running' };
  };

  const describe = (plan: CommitPlan, x: XState): Record<string, unknown> => ({
    state: x.running ? 'running' : 'stopped',
    containerId: x.containerId,
    mainTask: x.running ? x.mainTask : null,
    ...layoutOf(plan),
  });

  /** One step of a commit; answers an error to roll back, or the step's result. */
  const applyStep = async (
    plan: CommitPlan,
    step: PlanStep,
    x: XState,
    grace: number,
    undo: (() => Promise<void>)[],
  ): Promise<E.Either<AnyError, StepResult>> => {
    const kind = step.member?.id.kind;
    const ok: StepResult = { id: step.id, op: step.op, status: 'SUCCESS' };
    const refused = storageChangeRefused(step, x.running, 'Docker cannot change the storage of a running container');
    if (refused !== undefined) return E.left(refused);
    if (step.op === 'unbind' && kind === 'task') {
      const cid = x.mainTask === step.id ? x.containerId : null;
      return E.right(
        await unbindTask(
          plan,
          step,
          grace,
          cid === null
            ? undefined
            : async () => {
                const code = await stopMain(cid, grace, true);
                x.retired?.push(cid);
                Object.assign(x, { running: false, containerId: null, mainTask: null });
                return code;
              },
        ),
      );
    }
    if (step.op !== 'bind' || kind !== 'task') return E.right(ok);
    const spec = specOf(plan, step.id);
    if (x.running && x.containerId !== null) {
      if (spec.daemon === true)
        return E.left(
          unsupported(step.id, 'a daemon task exec’d into a running executor', 'bind it on a stopped executor instead'),
        );
      const r = await startExec(x.containerId, plan.runs.open(step.id));
      return E.isLeft(r) ? r : E.right(ok);
    }
    if (x.containerId !== null) x.retired?.push(x.containerId);
    const r = await startMain(plan, plan.runs.open(step.id));
    if (E.isLeft(r)) return r;
    Object.assign(x, { running: true, containerId: r.right, mainTask: step.id });
    const cid = r.right;
    undo.push(async () => {
      await stopMain(cid, 0);
    });
    return E.right(ok);
  };

  /**
   * Applies a plan. A container the new composition replaces (the stopped main of an unbound
   * task, or the one a new main task takes over from) is kept until the registry has the commit
   * (`retire`): a rollback, or a registry write that fails, leaves it as the record says.
   */
  const commit = async (plan: CommitPlan): Promise<DriverCommit> => {
    const x: XState = { ...recorded(plan.attributes), retired: [] };
    const grace = backendOf(plan.options).stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;
    const r = await commitSteps(
      plan,
      faults,
      (step, undo) => applyStep(plan, step, x, grace, undo),
      () => describe(plan, x),
    );
    // a rolled-back commit may have made a cold container: deleting the executor lists them again
    if (E.isLeft(r)) warmOnly.delete(plan.executor.key);
    const retired = x.retired ?? [];
    if (E.isLeft(r) || retired.length === 0) return r;
    return E.right({ ...r.right, retire: async () => void (await Promise.all(retired.map(removeContainer))) });
  };

  /** On open: follows a task that ran while no backend watched, or reports how it ended. */
  const resume = async (sink: RunSink, status: TaskStatus, _executor: Element): Promise<void> => {
    const p = status.process ?? {};
    const containerId = typeof p.containerId === 'string' ? p.containerId : undefined;
    if (containerId === undefined) return void (await sink.end({ exitCode: null, reason: 'lost' }));
    if (typeof p.execId === 'string') return resumeExec(sink, containerId, p.execId, String(p.marker ?? ''), p.warm === true);
    const c = d.getContainer(containerId);
    let info: Docker.ContainerInspectInfo;
    try {
      info = await c.inspect();
    } catch {
      return void (await sink.end({
        exitCode: null,
        reason: 'lost',
        executor: { state: 'stopped', containerId: null, mainTask: null },
      }));
    }
    const again = restarts(sink.spec);
    sink.started({ process: { containerId }, kill: (sig, grace) => killContainer(containerId, sig, grace, again) });
    if (again || sink.spec.log?.destination === 'none') return follow(sink, c, undefined, sink.kept);
    const running = info.State.Running;
    const logs = await logStream(c, running);
    // a container still running is followed in the background; one that ended is read to its end now
    if (running) follow(sink, c, logs, sink.kept);
    else await followMain(sink, c, logs, new Demux((st, data) => sink.output(st, data), sink.kept));
  };

  const resumeExec = async (sink: RunSink, containerId: string, execId: string, marker: string, warm: boolean) => {
    const exec = d.getExec(execId);
    sink.started({
      process: { containerId, execId, marker, ...(warm ? { warm } : {}) },
      kill: (sig, grace) => killExec(containerId, exec, marker, sink.spec.user, sig, grace),
    });
    // exec output is not kept by Docker: what arrived while no backend watched is lost
    const poll = async (): Promise<void> => {
      for (;;) {
        const info = await exec.inspect().catch((err: unknown) => (statusOf(err) === 404 ? undefined : null));
        if (info === undefined) return endExec(sink, containerId, warm, null, 'lost');
        if (info !== null && !info.Running) return endExec(sink, containerId, warm, info.ExitCode ?? null, 'exited');
        await new Promise((r) => setTimeout(r, 500));
      }
    };
    void poll().catch(() => undefined);
  };

  return {
    backendOptions: DockerExecutorOptionsC,
    commit,
    resume,
    async undo(plan, attributes) {
      warmOnly.delete(plan.executor.key);
      const id = attributes.containerId;
      if (typeof id === 'string' && id !== plan.attributes.containerId) await stopMain(id, 0);
    },
    async destroy(el: Element, _comp: CompositionRecord | undefined): Promise<E.Either<DeleteError, void>> {
      try {
        const cs = warmOnly.delete(el.id.key)
          ? []
          : await d.listContainers({
              all: true,
              filters: { label: [`${LABEL.id}=${el.id.key}`, `${LABEL.registry}=${engine.instance}`] },
            });
        for (const c of cs) await removeContainer(c.Id);
        // a warm container an executor took carries no lessl.id label
        if (typeof el.attributes.containerId === 'string') await removeContainer(el.attributes.containerId);
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
    async close() {
      closing.abort();
      for (const s of followers) s.destroy();
      followers.clear();
    },
  };
};

/** An executor's storage as committed (its attributes `rootfs`, `mounts`, `readOnlyRootfs`). */
export const layoutOf = (plan: CommitPlan): Record<string, unknown> => ({
  rootfs: plan.after.find((m) => m.id.kind === 'image')?.id.key ?? null,
  mounts: plan.after
    .filter((m) => m.id.kind === 'volume')
    .map((m) => ({ volume: m.id.key, at: m.mountpoint, readOnly: m.readOnly })),
  readOnlyRootfs: plan.options.readOnlyRootfs === true,
});

/** Join or leave of an image or volume on a running executor: Unsupported (`why`: what the engine cannot do). */
export const storageChangeRefused = (step: PlanStep, running: boolean, why: string): AnyError | undefined => {
  const kind = step.member?.id.kind;
  if (!running || (step.op !== 'join' && step.op !== 'leave') || (kind !== 'image' && kind !== 'volume')) return undefined;
  return unsupported(step.id, `${step.op} of ${kind}s on a running executor`, `${why}; unbind its task first`);
};

/**
 * The unbind of a task: its run is stopped (TERM, then KILL after the grace period); when it is
 * the executor's main task, `stopMain` stops and removes what runs it and answers the exit code.
 */
export const unbindTask = async (
  plan: CommitPlan,
  step: PlanStep,
  graceSeconds: number,
  stopMain: (() => Promise<number | null>) | undefined,
): Promise<StepResult> => {
  await plan.runs.stop(step.id, 'TERM', graceSeconds * 1000);
  const ok: StepResult = { id: step.id, op: step.op, status: 'SUCCESS' };
  return stopMain === undefined ? ok : { ...ok, task: stoppedResult(step.id, await stopMain()) };
};

/** One step of a commit: its result, or an error to roll back; `undo` collects what rolls it back. */
export type StepApplier = (step: PlanStep, undo: (() => Promise<void>)[]) => Promise<E.Either<AnyError, StepResult>>;

/**
 * Applies a plan's steps in order (a fault hook or an aborted signal fails a step); on a failing
 * step, runs the collected undos in reverse and answers the error with the results so far.
 * Shared by the container and Swarm executor drivers.
 */
export const commitSteps = async (
  plan: CommitPlan,
  faults: FaultHook | undefined,
  apply: StepApplier,
  describe: () => Record<string, unknown>,
): Promise<DriverCommit> => {
  const results: StepResult[] = [];
  const undo: (() => Promise<void>)[] = [];
  const failWith = async (step: PlanStep, error: AnyError): Promise<DriverCommit> => {
    results.push({ id: step.id, op: step.op, status: 'ERROR', error });
    for (const u of undo.reverse()) await u().catch(() => undefined);
    return E.left({ error, results });
  };
  for (const step of plan.steps) {
    const fault = faults?.(step) ?? (plan.signal?.aborted === true ? aborted(step.id, plan.signal.reason) : undefined);
    if (fault !== undefined) return failWith(step, fault);
    try {
      const r = await apply(step, undo);
      if (E.isLeft(r)) return failWith(step, r.left);
      results.push(r.right);
    } catch (err) {
      return failWith(
        step,
        isDockerError(err) ? fromDocker(step.id, err) : runtimeError(step.id, `step failed: ${describeCause(err)}`, err),
      );
    }
  }
  return E.right({ results, attributes: describe() });
};

/** The result an unbind reports for a task it stopped (its output is read with `tasks.logs`). */
export const stoppedResult = (id: string, exitCode: number | null): TaskResult => ({
  id,
  exitCode,
  stdout: new Uint8Array(),
  stderr: new Uint8Array(),
  output: [],
  truncated: false,
  reason: 'stopped',
  state: 'killed',
  startedAt: null,
  endedAt: new Date().toISOString(),
});
