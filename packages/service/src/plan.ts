/**
 * From a validated wire spec to a plan: service defaults and the caller's maxima applied,
 * inline data decoded, the image resolved to a lessl ID. Pure; never throws.
 */
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, keyOf, type InvalidEntry } from '@lessl/core';
import type { Limits, TaskSpecV1 } from './spec.js';

/** Limits with every field set (memory bytes, cpus, pids, timeout seconds, output bytes). */
export type FullLimits = Required<Limits>;

/** What the operator decides. */
export interface Policy {
  /** Limits a spec gets for what it leaves out. */
  readonly defaults: FullLimits;
  /** The largest limits a user may ask for (a user's own maxima replace these). */
  readonly maxima: FullLimits;
  /** Seconds a one-shot task's results (and a daemon without ttl, at most `maxTtl`) are kept. */
  readonly defaultTtl: number;
  /** The longest ttl anyone gets; daemon tasks without a ttl get this. */
  readonly maxTtl: number;
  /** Network modes allowed besides `none`. */
  readonly networks: readonly string[];
  /** Fetching `src`: byte limit per resource, total time, redirects followed. */
  readonly fetch: { readonly maxBytes: number; readonly timeoutMs: number; readonly maxRedirects: number };
  /** The image store names are resolved in. */
  readonly imageStore: string;
  /**
   * Networks (CIDRs, e.g. `127.0.0.1/32`) that resource `src` and image sources may reach
   * although they are loopback, private, link-local, shared or unspecified (refused otherwise).
   */
  readonly allowNetworks: readonly string[];
  /** The largest request body of a function invocation (its stdin), in bytes: past it, 413. */
  readonly maxInvokeBytes: number;
  /** What each user may hold and ask at once (a user's own values replace these); see quotas.ts. */
  readonly quotas: QuotaPolicy;
  /** The largest request body the proxy passes to a task's port (`/v1/tasks/{id}/ports/...`, `/r/...`), in bytes: past it, 413. */
  readonly maxProxyBodyBytes: number;
}

/** What one user may hold and ask at once. */
export interface Quotas {
  /** Tasks not ended (queued or running). */
  readonly runningTasks: number;
  /** Jobs waiting in the queue (tasks, execs, invocations). */
  readonly queuedJobs: number;
  /** The sum of the sizes of the user's images, in bytes. */
  readonly imageBytes: number;
  /** The sum of the sizes of the user's volumes (a task's resource files included), in bytes. */
  readonly volumeBytes: number;
  /** Requests per second, on average (a token bucket refilled at this rate). */
  readonly requestsPerSecond: number;
  /** Requests at once past the average: the bucket's size. */
  readonly burst: number;
}

/** The operator's quotas: every user's unless their own replace them, and whether admins are bound. */
export interface QuotaPolicy extends Quotas {
  /** Admins are not held to any quota nor rate limit (default false: they are, like everyone). */
  readonly exemptAdmins: boolean;
}

/** The default quotas: what a small team shares one engine with (docs/service.md says why). */
export const DEFAULT_QUOTAS: QuotaPolicy = {
  runningTasks: 32,
  queuedJobs: 256,
  imageBytes: 20 * 1024 ** 3,
  volumeBytes: 20 * 1024 ** 3,
  requestsPerSecond: 50,
  burst: 100,
  exemptAdmins: false,
};

/** The default policy. */
export const DEFAULT_POLICY: Policy = {
  defaults: { memory: 256 << 20, cpus: 1, pids: 256, timeout: 300, output: 1 << 20 },
  maxima: { memory: 2 * 1024 ** 3, cpus: 2, pids: 4096, timeout: 3600, output: 16 << 20 },
  defaultTtl: 3600,
  maxTtl: 86400,
  networks: [],
  fetch: { maxBytes: 8 << 20, timeoutMs: 10_000, maxRedirects: 3 },
  imageStore: 'local',
  allowNetworks: [],
  maxInvokeBytes: 6 << 20,
  quotas: DEFAULT_QUOTAS,
  maxProxyBodyBytes: 16 << 20,
};

/** A file to put into the container. */
export interface FilePlan {
  /** Absolute path of the file. */
  readonly path: string;
  /** Inline content (base64 on the record), or a URL fetched when the task starts. */
  readonly data?: string;
  readonly src?: string;
}

/** A named volume of the caller's, mounted. */
export interface MountPlan {
  readonly volume: string;
  readonly mountpoint: string;
}

/** A task ready to run. */
export interface TaskPlan {
  readonly image: string;
  readonly daemon: boolean;
  readonly ttl: number;
  readonly name: string | null;
  readonly pwd: string | null;
  readonly env: Readonly<Record<string, string>>;
  readonly cmd: readonly string[];
  readonly files: readonly FilePlan[];
  readonly mounts: readonly MountPlan[];
  readonly limits: FullLimits;
  readonly network: string;
  /** TCP ports the task serves (its main task declares them); absent on records made before ports: none. */
  readonly ports?: readonly number[];
  /** The first command's input (base64); absent: none. Dropped once that command has started. */
  readonly stdin?: string;
}

const TEXT =
  /^(text\/.*|application\/(json|xml|javascript|ecmascript|x-sh|x-shellscript|x-python|x-yaml|yaml|toml|x-perl|x-ruby)|.*\+(json|xml))(;.*)?$/i;

/** True when a content type carries `data` as text (otherwise base64). No type means text. */
export const isTextType = (ct: string | undefined): boolean => ct === undefined || TEXT.test(ct.trim());

const decodeBase64 = (s: string): Buffer | undefined => {
  const clean = s.replace(/\s+/g, '');
  return clean.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(clean) ? Buffer.from(clean, 'base64') : undefined;
};

const lastSegment = (url: string): string => {
  const seg = decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '');
  return /^[A-Za-z0-9._-]{1,255}$/.test(seg) && seg !== '.' && seg !== '..' ? seg : 'resource';
};

const joinPath = (dir: string, name: string): string => `${dir.replace(/\/+$/, '')}/${name}`;

/** The image ID a spec's `image` names. */
export const imageId = (image: string, store: string): string =>
  image.startsWith('image://') ? image : keyOf('image', store, image);

const LIMIT_KEYS = ['memory', 'cpus', 'pids', 'timeout', 'output'] as const;

/**
 * A task's limits: those asked for, else the operator's defaults. A default above the caller's
 * maximum is lowered to it; only what the caller asked for is refused.
 */
export const limitsOf = (
  spec: { readonly limits?: Limits },
  policy: Policy,
  maxima: FullLimits,
): E.Either<InvalidEntry, FullLimits> => {
  const asked = spec.limits ?? {};
  const past = LIMIT_KEYS.filter((k) => (asked[k] ?? 0) > maxima[k]);
  if (past.length > 0)
    return E.left(
      invalidEntry(
        `limits past your maxima: ${past.map((k) => `${k} ${asked[k] ?? 0} > ${maxima[k]}`).join(', ')}`,
        '',
        past.map((k) => `limits.${k}`),
      ),
    );
  const pick = (k: keyof FullLimits): number => asked[k] ?? Math.min(policy.defaults[k], maxima[k]);
  return E.right({
    memory: pick('memory'),
    cpus: pick('cpus'),
    pids: pick('pids'),
    timeout: pick('timeout'),
    output: pick('output'),
  });
};

/** Refuses a network the operator does not allow (tasks and functions alike). */
export const checkNetwork = (policy: Policy, network: string): InvalidEntry | undefined =>
  network !== 'none' && !policy.networks.includes(network)
    ? invalidEntry(
        `network "${network}" is not allowed here (allowed: none${policy.networks.map((n) => `, ${n}`).join('')})`,
        '',
        ['network'],
      )
    : undefined;

/** Refuses a network the operator does not allow, and a ttl past the maximum. */
const checkPolicy = (spec: TaskSpecV1, policy: Policy, network: string): InvalidEntry | undefined => {
  const net = checkNetwork(policy, network);
  if (net !== undefined) return net;
  if (spec.ttl !== undefined && spec.ttl > policy.maxTtl)
    return invalidEntry(`ttl ${spec.ttl} is past the maximum ${policy.maxTtl}`, '', ['ttl']);
  return undefined;
};

/** The spec's resources as files (data inline or fetched from `src`) and volume mounts; bad base64 is refused. */
const resourcesOf = (spec: TaskSpecV1): E.Either<InvalidEntry, { files: FilePlan[]; mounts: MountPlan[] }> => {
  const files: FilePlan[] = [];
  const mounts: MountPlan[] = [];
  for (const [i, r] of (spec.resources ?? []).entries()) {
    if (r.mnt !== undefined) mounts.push({ volume: r.mnt, mountpoint: r.dest ?? '/' });
    else if (r.src !== undefined) files.push({ path: joinPath(r.dest ?? spec.pwd ?? '/', lastSegment(r.src)), src: r.src });
    else if (r.data !== undefined) {
      const bytes = isTextType(r.content_type) ? Buffer.from(r.data, 'utf8') : decodeBase64(r.data);
      if (bytes === undefined)
        return E.left(invalidEntry(`resources.${i}.data is not valid base64`, '', [`resources.${i}.data`]));
      files.push({ path: r.dest ?? '/', data: bytes.toString('base64') });
    }
  }
  return E.right({ files, mounts });
};

/**
 * The first command's input as base64: `stdin` (text) or `stdin_base64`, not both, and only with a
 * command to read it; bad base64 is refused. None: undefined.
 */
const stdinOf = (spec: TaskSpecV1): E.Either<InvalidEntry, string | undefined> => {
  const { stdin, stdin_base64: b64 } = spec;
  if (stdin === undefined && b64 === undefined) return E.right(undefined);
  if (stdin !== undefined && b64 !== undefined)
    return E.left(invalidEntry('give stdin or stdin_base64, not both', '', ['stdin', 'stdin_base64']));
  const key = stdin === undefined ? 'stdin_base64' : 'stdin';
  if ((spec.cmd ?? []).length === 0) return E.left(invalidEntry(`${key} needs a command in cmd to read it`, '', [key]));
  if (stdin !== undefined) return E.right(Buffer.from(stdin, 'utf8').toString('base64'));
  const bytes = decodeBase64(b64 ?? '');
  return bytes === undefined
    ? E.left(invalidEntry('stdin_base64 is not valid base64', '', ['stdin_base64']))
    : E.right(bytes.toString('base64'));
};

/** Refuses resources that collide, go into / itself, or into more than 8 directories. */
const checkPlaces = (files: readonly FilePlan[], mounts: readonly MountPlan[]): InvalidEntry | undefined => {
  const paths = [...files.map((f) => f.path), ...mounts.map((m) => m.mountpoint)];
  const dup = paths.find((p, i) => paths.indexOf(p) !== i);
  if (dup !== undefined) return invalidEntry(`two resources go to ${dup}`, '', ['resources']);
  if (mounts.some((m) => m.mountpoint === '/') || files.some((f) => dirOf(f.path) === '/' || f.path.endsWith('/')))
    return invalidEntry('resources cannot go into / itself: name a directory (e.g. /opt)', '', ['resources']);
  if (fileDirs(files).length > 8) return invalidEntry('resources go into more than 8 directories', '', ['resources']);
  return undefined;
};

/**
 * Applies the policy to a spec. `maxima` are the caller's (default: the operator's). Limits past
 * the maxima, a network the operator does not allow, bad base64: `InvalidEntry`.
 */
export const planTask = (
  spec: TaskSpecV1,
  policy: Policy,
  maxima: FullLimits = policy.maxima,
): E.Either<InvalidEntry, TaskPlan> => {
  const limits = limitsOf(spec, policy, maxima);
  if (E.isLeft(limits)) return limits;
  const network = spec.network ?? 'none';
  const refused = checkPolicy(spec, policy, network);
  if (refused !== undefined) return E.left(refused);
  const res = resourcesOf(spec);
  if (E.isLeft(res)) return res;
  const { files, mounts } = res.right;
  const misplaced = checkPlaces(files, mounts);
  if (misplaced !== undefined) return E.left(misplaced);
  const stdin = stdinOf(spec);
  if (E.isLeft(stdin)) return stdin;
  return E.right({
    image: imageId(spec.image, policy.imageStore),
    daemon: spec.daemon === true,
    ttl: spec.ttl ?? (spec.daemon === true ? policy.maxTtl : policy.defaultTtl),
    name: spec.task_name ?? null,
    pwd: spec.pwd ?? null,
    env: spec.env ?? {},
    cmd: spec.cmd ?? [],
    files,
    mounts,
    limits: limits.right,
    network,
    ...((spec.ports ?? []).length === 0 ? {} : { ports: spec.ports }),
    ...(stdin.right === undefined ? {} : { stdin: stdin.right }),
  });
};

/** The directory of an absolute path ('/' for a file in the root). */
export const dirOf = (path: string): string => path.slice(0, path.lastIndexOf('/')) || '/';

/** The directories files go into: each becomes a per-task volume mounted there. */
export const fileDirs = (files: readonly FilePlan[]): string[] => [...new Set(files.map((f) => dirOf(f.path)))].sort();
