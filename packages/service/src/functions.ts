/**
 * Functions over REST, the service side: the wire codecs (`FunctionBodyC`, `FunctionViewC`), the
 * mapping of a body to the SDK's `FunctionSpec` (the task spec's limits, policy and maxima
 * applied as for tasks), and `FunctionDesk`, which calls `backend.functions` on behalf of a user
 * (`user:<name>`; admins as the service) and decides what each user may see: their own functions
 * and the public ones (admins: all). Another user's private function is answered as absent.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import {
  functionKey,
  invalidEntry,
  notFound,
  permissionDenied,
  type AnyError,
  type CallContext,
  type FunctionInfo,
  type Functions,
  type FunctionSpec,
  type Invocation,
  type InvocationRecord,
  type LesslEvent,
} from '@lessl/core';
import type { Backend } from '@lessl/kit';
import type { ErrorRecord, InvocationResultRecord, JobRecord, ServiceDb, UserRecord } from './db.js';
import { as, onBehalfOf, readElement, SERVICE, USER_PRINCIPAL } from './elements.js';
import type { Metrics } from './metrics.js';
import { checkNetwork, imageId, limitsOf, type FullLimits, type Policy } from './plan.js';
import { HttpProblem } from './problem.js';
import { executorOptions } from './runner.js';
import { FUNCTION_DEFAULTS } from './stack.js';
import { InvocationLogC, InvocationResultC, type FunctionBody, type FunctionView } from './function-wire.js';

export * from './function-wire.js';

/** Refuses a body that names both or neither of `argv` and `cmd`, or more minimum than maximum containers. */
export const checkBody = (b: FunctionBody): HttpProblem | undefined => {
  if ((b.argv === undefined) === (b.cmd === undefined))
    return new HttpProblem(invalidEntry('give exactly one of argv (exec form) and cmd (a shell command)', '', ['argv', 'cmd']));
  if ((b.min_containers ?? FUNCTION_DEFAULTS.min_containers) > (b.max_containers ?? FUNCTION_DEFAULTS.max_containers))
    return new HttpProblem(invalidEntry('min_containers is more than max_containers', '', ['min_containers', 'max_containers']));
  return undefined;
};

/** The SDK's definition of a body whose limits and network were checked (`limits`). */
export const sdkSpecOf = (
  name: string,
  b: FunctionBody,
  limits: FullLimits,
  store: string,
  shell: readonly string[],
): FunctionSpec => ({
  name,
  image: imageId(b.image, store),
  spec: {
    cmd: b.argv ?? [...shell, b.cmd ?? ''],
    ...(b.env === undefined || Object.keys(b.env).length === 0 ? {} : { env: b.env }),
    ...(b.pwd === undefined ? {} : { pwd: b.pwd }),
    ...(b.user === undefined ? {} : { user: b.user }),
    limits: { deadlineMs: limits.timeout * 1000, outputBytes: limits.output },
  },
  options: executorOptions({ network: b.network ?? 'none', limits }),
  reuse: b.reuse ?? FUNCTION_DEFAULTS.reuse,
  concurrency: b.concurrency ?? FUNCTION_DEFAULTS.concurrency,
  minContainers: b.min_containers ?? FUNCTION_DEFAULTS.min_containers,
  maxContainers: b.max_containers ?? FUNCTION_DEFAULTS.max_containers,
  idleMs: (b.idle_seconds ?? FUNCTION_DEFAULTS.idle_seconds) * 1000,
  public: b.public ?? FUNCTION_DEFAULTS.public,
  ...(b.description === undefined ? {} : { description: b.description }),
});

/** The user name of a function's owner (the SDK's principal `user:<name>`). */
const ownerName = (owner: string): string => (owner.startsWith(USER_PRINCIPAL) ? owner.slice(USER_PRINCIPAL.length) : owner);

/** The command of a view: `cmd` when it is the shell with one command, else `argv`. */
const commandView = (cmd: readonly string[], shell: readonly string[]): { cmd: string } | { argv: string[] } => {
  const last = cmd[shell.length];
  return cmd.length === shell.length + 1 && shell.every((s, i) => cmd[i] === s) && last !== undefined
    ? { cmd: last }
    : { argv: [...cmd] };
};

/** The view of a deployed function. */
export const functionView = (f: FunctionInfo, store: string, shell: readonly string[]): FunctionView => {
  const prefix = `image://${store}/`;
  const o = f.options;
  const l = f.spec.limits ?? {};
  return {
    name: f.name,
    owner: ownerName(f.owner),
    version: f.version,
    created_at: f.createdAt,
    updated_at: f.updatedAt,
    image: f.image.startsWith(prefix) ? f.image.slice(prefix.length) : f.image,
    ...commandView(f.spec.cmd, shell),
    env: { ...(f.spec.env ?? {}) },
    ...(f.spec.pwd === undefined ? {} : { pwd: f.spec.pwd }),
    ...(f.spec.user === undefined ? {} : { user: f.spec.user }),
    limits: {
      memory: o.memoryBytes ?? 0,
      cpus: o.cpus ?? 0,
      pids: o.pids ?? 0,
      timeout: Math.round((l.deadlineMs ?? 0) / 1000),
      output: l.outputBytes ?? 0,
    },
    network: o.network ?? 'none',
    reuse: f.reuse,
    concurrency: f.concurrency,
    min_containers: f.minContainers,
    max_containers: f.maxContainers,
    idle_seconds: Math.round(f.idleMs / 1000),
    public: f.public,
    ...(f.description === undefined ? {} : { description: f.description }),
  };
};

/** A function's log as the API shows it. */
export const logView = (rs: readonly InvocationRecord[]): t.TypeOf<typeof InvocationLogC> => ({
  invocations: rs.map((r) => ({
    id: r.id,
    version: r.version,
    started_at: r.startedAt,
    duration_ms: r.durationMs,
    exit_code: r.exitCode,
    reason: r.reason,
    cold: r.cold,
    stderr_tail: r.stderrTail,
  })),
});

/** True when bytes are valid UTF-8. */
const isUtf8 = (b: Buffer): boolean => {
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(b);
    return true;
  } catch {
    return false;
  }
};

/** The jobs API's view of an invocation job's result. */
export const resultView = (r: InvocationResultRecord): t.TypeOf<typeof InvocationResultC> => {
  const [out, err] = [Buffer.from(r.stdout, 'base64'), Buffer.from(r.stderr, 'base64')];
  const text = isUtf8(out) && isUtf8(err);
  return {
    invocation: r.invocation,
    version: r.version,
    exit_code: r.exitCode,
    reason: r.reason,
    duration_ms: r.durationMs,
    cold: r.cold,
    truncated: r.truncated,
    encoding: text ? 'utf8' : 'base64',
    stdout: text ? out.toString('utf8') : r.stdout,
    stderr: text ? err.toString('utf8') : r.stderr,
  };
};

/** The record of an invocation's end kept with its job. */
const resultRecord = (i: Invocation): InvocationResultRecord => ({
  invocation: i.id,
  version: i.version,
  exitCode: i.exitCode,
  reason: i.reason,
  durationMs: i.durationMs,
  cold: i.cold,
  truncated: i.truncated,
  stdout: Buffer.from(i.stdout).toString('base64'),
  stderr: Buffer.from(i.stderr).toString('base64'),
});

/** The headers of a synchronous invocation's answer. */
export const invocationHeaders = (i: Invocation): Record<string, string> => ({
  'x-lessl-exit-code': i.exitCode === null ? '' : String(i.exitCode),
  'x-lessl-reason': i.reason,
  'x-lessl-duration-ms': String(Math.round(i.durationMs)),
  'x-lessl-stderr-bytes': String(i.stderr.byteLength),
  'x-lessl-cold': String(i.cold),
  'x-lessl-invocation': i.id,
  'x-lessl-version': String(i.version),
  'x-lessl-truncated': String(i.truncated),
});

/** Errors of an invocation that ran and failed (not the caller's: a lost container, a backend error). */
const FAILURES: ReadonlySet<string> = new Set(['Unavailable', 'RuntimeError']);

/** What the desk needs. */
export interface DeskDeps {
  readonly backend: Backend;
  readonly db: ServiceDb;
  readonly policy: Policy;
  readonly shell: readonly string[];
  readonly metrics: Metrics;
}

/** The SDK's answer, or the problem it maps to (another user's function: `absent`). */
const orProblem = async <A>(r: E.Either<AnyError, A> | Promise<E.Either<AnyError, A>>, absent: () => HttpProblem): Promise<A> => {
  const x = await r;
  if (E.isRight(x)) return x.right;
  if (x.left._tag === 'NotFound' || x.left._tag === 'PermissionDenied') throw absent();
  throw new HttpProblem(x.left);
};

/** The functions of the service's users, on `backend.functions`. */
export class FunctionDesk {
  /** Owners of the functions seen (kept after removal, so `deleted` events still find theirs). */
  private readonly owners = new Map<string, string>();
  constructor(private readonly d: DeskDeps) {}

  /** The backend's functions. */
  private get sdk(): Functions {
    return this.d.backend.functions;
  }

  private view(f: FunctionInfo): FunctionView {
    this.owners.set(f.name, ownerName(f.owner));
    return functionView(f, this.d.policy.imageStore, this.d.shell);
  }

  /** A function the user may see (theirs or public; admins: all), else 404. */
  async visible(u: UserRecord, name: string): Promise<FunctionInfo> {
    const absent = (): HttpProblem => new HttpProblem(notFound(functionKey(name)), 404);
    const f = await orProblem(this.sdk.get(name, onBehalfOf(u))(), absent);
    this.owners.set(name, ownerName(f.owner));
    if (!u.admin && !f.public && ownerName(f.owner) !== u.name) throw absent();
    return f;
  }

  /** The view of a function the user may see. */
  async get(u: UserRecord, name: string): Promise<FunctionView> {
    return this.view(await this.visible(u, name));
  }

  /** The functions the user may see, by name. */
  async list(u: UserRecord): Promise<FunctionView[]> {
    const all = await orProblem(this.sdk.list(onBehalfOf(u))(), () => new HttpProblem(notFound('function://')));
    return all
      .filter((f) => u.admin || f.public || ownerName(f.owner) === u.name)
      .map((f) => this.view(f))
      .sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** The limits of a body (policy defaults, the user's maxima), its network and image checked; else 400 (403: public by a non-admin). */
  private async checked(u: UserRecord, b: FunctionBody, maxima: FullLimits): Promise<FullLimits> {
    const bad = checkBody(b);
    if (bad !== undefined) throw bad;
    if (b.public === true && !u.admin) throw new HttpProblem(permissionDenied('function://', u.name, 'create'), 403);
    const limits = limitsOf(b, this.d.policy, maxima);
    if (E.isLeft(limits)) throw new HttpProblem(limits.left, 400);
    const net = checkNetwork(this.d.policy, b.network ?? 'none');
    if (net !== undefined) throw new HttpProblem(net, 400);
    const image = imageId(b.image, this.d.policy.imageStore);
    if ((await readElement(this.d.backend, 'image', image, onBehalfOf(u))) === undefined)
      throw new HttpProblem(invalidEntry(`unknown image ${b.image}`, image, ['image']), 400);
    return limits.right;
  }

  /** Creates or updates the user's function; answers its view and whether it was made now. */
  async deploy(
    u: UserRecord,
    name: string,
    b: FunctionBody,
    maxima: FullLimits,
  ): Promise<{ view: FunctionView; created: boolean }> {
    const limits = await this.checked(u, b, maxima);
    const fns = this.sdk;
    const before = await fns.get(name, as(u.name))();
    const spec = sdkSpecOf(name, b, limits, this.d.policy.imageStore, this.d.shell);
    const r = await fns.deploy(spec, as(u.name))();
    // the image was there a moment ago: one gone since is an unknown image, as above
    if (E.isLeft(r))
      throw r.left._tag === 'NotFound'
        ? new HttpProblem(invalidEntry(`unknown image ${b.image}`, spec.image, ['image']), 400)
        : new HttpProblem(r.left);
    const f = r.right;
    return { view: this.view(f), created: E.isLeft(before) };
  }

  /** Removes the user's function (invocations under way are killed); 404 when not visible, 403 when public and not theirs. */
  async remove(u: UserRecord, name: string): Promise<void> {
    const f = await this.visible(u, name);
    if (!u.admin && ownerName(f.owner) !== u.name)
      throw new HttpProblem(permissionDenied(functionKey(name), u.name, 'delete'), 403);
    await orProblem(this.sdk.remove(name, onBehalfOf(u))(), () => new HttpProblem(notFound(functionKey(name)), 404));
  }

  /** The log of a function the user owns (admins: any); 403 for a public one of another user. */
  async logs(u: UserRecord, name: string): Promise<readonly InvocationRecord[]> {
    const f = await this.visible(u, name);
    if (!u.admin && ownerName(f.owner) !== u.name)
      throw new HttpProblem(permissionDenied(functionKey(name), u.name, 'read'), 403);
    return orProblem(this.sdk.logs(name, onBehalfOf(u))(), () => new HttpProblem(notFound(functionKey(name)), 404));
  }

  /** Invokes a function the user may use with `input` as its stdin; counted in the metrics. */
  async invoke(
    u: Pick<UserRecord, 'name' | 'admin'>,
    name: string,
    input: Uint8Array,
    signal?: AbortSignal,
  ): Promise<Invocation> {
    const ctx: CallContext = onBehalfOf(u);
    const r = await this.sdk.invoke(name, { ...ctx, stdin: input, ...(signal === undefined ? {} : { signal }) })();
    if (E.isLeft(r) && FAILURES.has(r.left._tag)) this.d.metrics.failed(name, r.left._tag);
    const inv = await orProblem(r, () => new HttpProblem(notFound(functionKey(name)), 404));
    this.d.metrics.invoked(inv);
    return inv;
  }

  /**
   * Runs an invocation job (`?async`): invokes, then keeps the result with the job (its input
   * emptied). Answers the error that stopped it, or null (a non-zero exit is a result).
   */
  async runJob(j: JobRecord, signal: AbortSignal): Promise<ErrorRecord | null> {
    const call = j.invoke;
    if (call === undefined) return { tag: 'RuntimeError', message: 'not an invocation job' };
    try {
      const inv = await this.invoke(
        { name: j.owner, admin: call.admin },
        call.function,
        Buffer.from(call.input, 'base64'),
        signal,
      );
      const result = resultRecord(inv);
      await this.d.db.updateJob(j.id, (cur) => ({ ...cur, invoke: { ...call, input: '' }, result }));
      return null;
    } catch (err) {
      const e = err instanceof HttpProblem ? err.error : undefined;
      return { tag: e?._tag ?? 'RuntimeError', message: e?.message ?? 'the invocation failed' };
    }
  }

  /** The user name owning the function an event names (undefined: not a function event, or unknown). */
  async ownerOf(e: LesslEvent): Promise<string | undefined> {
    const key = e.id.key;
    if (!key.startsWith('function://')) return undefined;
    const name = key.slice('function://'.length);
    const given = e.detail.owner;
    if (typeof given === 'string') return ownerName(given);
    if (this.owners.has(name)) return this.owners.get(name);
    const f = await this.sdk.get(name, SERVICE)();
    return E.isRight(f) ? this.view(f.right).owner : undefined;
  }

  /** Figures of every function (for the metrics). */
  stats(): ReturnType<Functions['stats']> {
    return this.sdk.stats();
  }
}
