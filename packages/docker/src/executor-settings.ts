/**
 * The settings of an executor's container, shared by the container and Swarm drivers: the
 * hardening defaults, the Docker executor options, and what a task's container is made from.
 *
 * Hardening defaults (each overridable through `ExecutorOptions` / `options.backend`):
 * network `none`, never privileged, every capability dropped (`capAdd` adds back), no-new-privileges,
 * an init process, pids limit 256, memory limit 512 MiB.
 */
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { pack } from 'tar-stream';
import { invalidEntry, type AnyError, type ExecutorOptions, type Member, type TaskSpec } from '@lessl/core';
import type { CommitPlan, RunSink, SecretFile } from '@lessl/kit';
import { executorLabels } from './labels.js';
import { containerName } from './names.js';
import type { ContainerBase } from './pool.js';

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

/**
 * The Docker options of an executor, decoded (they were validated at `handle`; nothing is read by
 * cast). A Swarm executor's `constraints` are Swarm placement constraints (an array, see
 * `SwarmExecutorOptionsC`): the container options are read without them, so they keep their
 * hardening (`capAdd`, `allowNewPrivileges`) and `stopGraceSeconds`.
 */
export const backendOf = (o: ExecutorOptions): DockerExecutorOptions => {
  const { constraints, ...rest } = o.backend ?? {};
  const r = DockerExecutorOptionsC.decode(Array.isArray(constraints) ? rest : (o.backend ?? {}));
  return E.isRight(r) ? r.right : {};
};

/** Seconds between TERM and KILL when a commit stops an executor's task (`stopGraceSeconds`). */
export const graceSecondsOf = (o: ExecutorOptions): number => backendOf(o).stopGraceSeconds ?? DEFAULTS.stopGraceSeconds;

/** Owner and mode of credential files: the task's numeric user owns them (0400), named users read them (0444). */
const fileOwner = (user: string | undefined): { uid: number; gid: number; mode: number } => {
  const m = /^(\d+)(?::(\d+))?$/.exec(user ?? '0');
  if (m === null) return { uid: 0, gid: 0, mode: 0o444 };
  return { uid: Number(m[1]), gid: Number(m[2] ?? m[1]), mode: 0o400 };
};

/** A tar of credential files (missing parent directories are made by Docker). */
export const secretTar = (files: readonly SecretFile[], user: string | undefined): NodeJS.ReadableStream => {
  const p = pack();
  const { uid, gid, mode } = fileOwner(user);
  for (const f of files) p.entry({ name: f.path.slice(1), mode, uid, gid }, Buffer.from(f.data));
  p.finalize();
  return p;
};

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

/**
 * The image joined as an executor's root filesystem, or `InvalidEntry` naming `rootfs`
 * (`needs`: why the engine needs one, appended to the message).
 */
export const rootImageOf = (plan: CommitPlan, needs = ''): E.Either<AnyError, Member> => {
  const image = plan.after.find((m) => m.id.kind === 'image');
  if (image !== undefined) return E.right(image);
  const message = `no storage is mapped to /: ${plan.executor.key} has no image joined as its root filesystem${needs}`;
  return E.left(invalidEntry(message, plan.executor.key, ['rootfs']));
};

/** A string attribute of a member element (`imageId`, `volumeName`), or '' when it has none. */
const attributeOf = (plan: CommitPlan, key: string, name: string): string =>
  String(plan.elements.get(key)?.attributes[name] ?? '');

/** The Docker image ID of the image member `image`. */
export const imageIdOf = (plan: CommitPlan, image: Member): string => attributeOf(plan, image.id.key, 'imageId');

/** The volumes an executor mounts after the commit. */
export const volumesOf = (plan: CommitPlan): Member[] => plan.after.filter((m) => m.id.kind === 'volume');

/** The Docker mounts of an executor's volumes (a volume without a mountpoint goes to `/data`). */
export const volumeMounts = (plan: CommitPlan): Docker.MountSettings[] =>
  volumesOf(plan).map((m) => ({
    Type: 'volume' as const,
    Source: attributeOf(plan, m.id.key, 'volumeName'),
    Target: m.mountpoint ?? '/data',
    ReadOnly: m.readOnly,
  }));

/** The labels of what runs a task of an executor (its container or its Swarm service). */
export const runLabels = (instance: string, plan: CommitPlan, task: string): Record<string, string> =>
  executorLabels(instance, plan.executor.key, task);

/** A fresh name for what runs a task of an executor (a container or a service). */
export const runName = (instance: string, plan: CommitPlan): string =>
  containerName(instance, plan.executor, randomBytes(3).toString('hex'));

/** The process settings of a task: command, environment, working directory and user. */
const processOf = (sink: RunSink): Pick<Docker.ContainerCreateOptions, 'Cmd' | 'Env' | 'WorkingDir' | 'User'> => ({
  Cmd: [...sink.spec.cmd],
  Env: envOf(sink),
  ...(sink.spec.pwd === undefined ? {} : { WorkingDir: sink.spec.pwd }),
  ...(sink.spec.user === undefined ? {} : { User: sink.spec.user }),
});

/** The create options of a task's main container: its executor's settings, the task's process, no terminal. */
export const containerConfig = (
  instance: string,
  plan: CommitPlan,
  sink: RunSink,
): E.Either<AnyError, Docker.ContainerCreateOptions> => {
  const image = rootImageOf(plan, ', and a Docker container needs one');
  if (E.isLeft(image)) return image;
  const { spec } = sink;
  const base = containerBase(imageIdOf(plan, image.right), plan.options, spec.limits ?? {}, volumeMounts(plan));
  return E.right({
    name: runName(instance, plan),
    Image: base.Image,
    ...processOf(sink),
    Entrypoint: [],
    Labels: runLabels(instance, plan, sink.task),
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
