/**
 * Functions over any backend (docs/functions.md): definitions stored in the registry with their
 * owner and version, authorization, deadlines, output caps, `deployed`/`invoked`/`deleted`
 * events, a log of recent invocations and figures. The backend's `FunctionDriver` runs the
 * invocations in containers as the function's reuse policy says.
 */
import { randomUUID } from 'node:crypto';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import {
  aborted,
  CallContextProps,
  decodeCallContext,
  decodeExact,
  decodeOptions,
  showValue,
  type InvalidEntry,
  decodeExecutorOptions,
  decodeTaskSpec,
  FunctionSpecC,
  functionKey,
  functionOwnerRule,
  invalidEntry,
  isValidName,
  kindOfKey,
  nameCollision,
  notFound,
  permissionDenied,
  unavailable,
  unsupported,
  type CallContext,
  type DeployError,
  type EndReason,
  type FunctionAuthorizer,
  type FunctionError,
  type FunctionInfo,
  type FunctionOperation,
  type Functions,
  type FunctionStats,
  type Invocation,
  type InvocationRecord,
  type InvokeError,
  type InvokeRequest,
  type TaskSpec,
} from '@lessl/core';
import type { FunctionDriver } from './drivers.js';
import { inputOf } from './input.js';
import { unsupportedField } from './spec.js';
import { guard, principalOf, type Wiring } from './wiring.js';
import { DEFAULT_OUTPUT_BYTES } from './runtime.js';

/** Defaults of a function definition. */
export const FUNCTION_DEFAULTS = {
  reuse: 'per-invocation',
  concurrency: 1,
  minContainers: 0,
  maxContainers: 4,
  idleMs: 300_000,
} as const;
/** Invocations a function's log keeps. */
const LOG_SIZE = 100;
/** Bytes of stderr an invocation record keeps. */
const STDERR_TAIL = 4096;

/** What `makeFunctions` needs besides the wiring. */
export interface FunctionsOptions {
  /** Runs invocations; without one, `invoke` answers `Unsupported` (definitions still work). */
  readonly driver?: FunctionDriver;
  /** Who may do what with a function (default `functionOwnerRule`). */
  readonly authorize?: FunctionAuthorizer;
  /** Output kept per invocation when the spec sets no `limits.outputBytes`. */
  readonly outputBytes?: number;
}

/** Counters of one function, and its log. */
interface Figures {
  invocations: number;
  errors: number;
  cold: number;
  warm: number;
  readonly log: InvocationRecord[];
}

/** Output of one invocation, capped (stdout and stderr together, as a task's). */
class Collected {
  readonly stdout: Uint8Array[] = [];
  readonly stderr: Uint8Array[] = [];
  kept = 0;
  stderrBytes = 0;
  truncated = false;
  constructor(private readonly cap: number) {}

  add(stream: 'stdout' | 'stderr', data: Uint8Array): void {
    if (stream === 'stderr') this.stderrBytes += data.byteLength;
    const room = this.cap - this.kept;
    if (data.byteLength > room) this.truncated = true;
    if (room <= 0) return;
    const kept = data.byteLength > room ? data.slice(0, room) : data;
    (stream === 'stdout' ? this.stdout : this.stderr).push(kept);
    this.kept += kept.byteLength;
  }
}

/** An invocation's input, noting whether its process read it to its end. */
class TrackedInput implements AsyncIterable<Uint8Array> {
  private started = false;
  private ended = false;
  constructor(private readonly source: AsyncIterable<Uint8Array>) {}

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    this.started = true;
    for await (const c of this.source) yield c;
    this.ended = true;
  }

  /** After the process ended: whether input was left unread (one never read is pulled once to see). */
  async unread(): Promise<boolean> {
    // a driver's last read may still be settling as the process's end arrives: let it finish
    if (this.started && !this.ended) await new Promise((r) => setImmediate(r));
    if (this.ended) return false;
    if (this.started) return true;
    const it = this.source[Symbol.asyncIterator]();
    const first = await it.next().catch(() => ({ done: true }));
    await it.return?.().catch(() => undefined);
    return first.done !== true;
  }
}

/** The ID a call about `name` names in its errors (`function` for a name that is not a string). */
const idOf = (name: unknown): string => (typeof name === 'string' ? functionKey(name) : 'function');

/** A caller's context decoded exactly (`principal`, `signal`, `onProgress`), or `InvalidEntry` naming the field. */
const contextOf = (id: string, u: unknown): E.Either<InvalidEntry, CallContext> => decodeCallContext(id, u ?? {});

const joined = (chunks: readonly Uint8Array[]): Uint8Array => Buffer.concat(chunks);
const decoder = new TextDecoder();
const tailOf = (b: Uint8Array): string => decoder.decode(b.byteLength > STDERR_TAIL ? b.slice(b.byteLength - STDERR_TAIL) : b);

/** The fields a deploy compares to decide whether the function changed. */
const definitionOf = (f: FunctionInfo): string => {
  const { version: _v, createdAt: _c, updatedAt: _u, owner: _o, ...rest } = f;
  return JSON.stringify(rest);
};

/** The functions of a backend (see the module comment). */
export class FunctionRuntime implements Functions {
  private readonly figures = new Map<string, Figures>();
  /** Invocations under way, by function name: aborting one kills its process; `ended` settles with it. */
  private readonly running = new Map<string, Map<AbortController, Promise<unknown>>>();
  private readonly authorize: FunctionAuthorizer;
  private readonly outputBytes: number;

  constructor(
    private readonly w: Wiring,
    private readonly opts: FunctionsOptions = {},
  ) {
    this.authorize = opts.authorize ?? functionOwnerRule;
    this.outputBytes = opts.outputBytes ?? DEFAULT_OUTPUT_BYTES;
  }

  /** Prepares the containers of every stored function (after an open). */
  async start(): Promise<void> {
    for (const f of this.w.registry.functions()) await this.opts.driver?.deployed(f).catch(() => undefined);
  }

  deploy(spec: unknown, ctx?: CallContext): TaskEither<DeployError, FunctionInfo> {
    return guard<DeployError, FunctionInfo>('function', async () => {
      const c = contextOf('function', ctx);
      if (E.isLeft(c)) return c;
      const principal = principalOf(c.right);
      const d = this.decode(spec, principal);
      if (E.isLeft(d)) return d;
      const key = functionKey(d.right.name);
      return this.w.registry.locks.with([key], () => this.store(d.right, principal));
    });
  }

  get(name: string, ctx?: CallContext): TaskEither<FunctionError, FunctionInfo> {
    return guard<FunctionError, FunctionInfo>(idOf(name), async () => this.visible(name, ctx, 'read'));
  }

  list(ctx?: CallContext): TaskEither<FunctionError, readonly FunctionInfo[]> {
    return guard<FunctionError, readonly FunctionInfo[]>('function', async () => {
      const c = contextOf('function', ctx);
      if (E.isLeft(c)) return c;
      const principal = principalOf(c.right);
      return E.right(this.w.registry.functions().filter((f) => this.authorize(principal, 'read', f)));
    });
  }

  remove(name: string, ctx?: CallContext): TaskEither<FunctionError, void> {
    return guard<FunctionError, void>(idOf(name), async () => {
      const found = this.visible(name, ctx, 'remove');
      if (E.isLeft(found)) return found;
      const f = found.right;
      await this.w.registry.locks.with([functionKey(f.name)], async () => {
        const under = [...(this.running.get(f.name) ?? new Map<AbortController, Promise<unknown>>())];
        for (const [c] of under) c.abort('killed');
        await Promise.allSettled(under.map(([, ended]) => ended));
        await this.w.registry.commit({
          delFunction: [f.name],
          events: [
            { type: 'deleted', id: functionKey(f.name), revision: f.version, detail: { reason: 'removed', owner: f.owner } },
          ],
        });
      });
      this.figures.delete(f.name);
      await this.opts.driver?.removed(f);
      return E.right(undefined);
    });
  }

  logs(name: string, ctx?: CallContext): TaskEither<FunctionError, readonly InvocationRecord[]> {
    return guard<FunctionError, readonly InvocationRecord[]>(idOf(name), async () => {
      const found = this.visible(name, ctx, 'logs');
      if (E.isLeft(found)) return found;
      return E.right([...(this.figures.get(found.right.name)?.log ?? [])]);
    });
  }

  invoke(name: string, req: InvokeRequest = {}): TaskEither<InvokeError, Invocation> {
    return guard<InvokeError, Invocation>(idOf(name), async () => {
      const r = decodeOptions({ ...CallContextProps, stdin: t.unknown }, req, 'invoke request', { id: idOf(name), prefix: '' });
      if (E.isLeft(r)) return r;
      const { stdin: given, ...ctx } = r.right;
      const found = this.visible(name, ctx, 'invoke');
      if (E.isLeft(found)) return found;
      const driver = this.opts.driver;
      if (driver === undefined)
        return E.left(unsupported(functionKey(found.right.name), 'functions.invoke', 'this backend runs no functions'));
      const stdin = inputOf(given, functionKey(found.right.name));
      if (E.isLeft(stdin)) return stdin;
      const signal = ctx.signal;
      if (signal?.aborted === true) return E.left(aborted(functionKey(found.right.name), signal.reason));
      return this.call(driver, found.right, stdin.right, signal);
    });
  }

  stats(): readonly FunctionStats[] {
    return this.w.registry.functions().map((f) => {
      const g = this.figures.get(f.name);
      return {
        name: f.name,
        owner: f.owner,
        version: f.version,
        invocations: g?.invocations ?? 0,
        errors: g?.errors ?? 0,
        cold: g?.cold ?? 0,
        warm: g?.warm ?? 0,
        containers: this.opts.driver?.containers(f.name) ?? { starting: 0, idle: 0, busy: 0 },
      };
    });
  }

  /** Aborts every invocation under way and closes the driver. */
  async close(): Promise<void> {
    for (const m of this.running.values()) for (const c of m.keys()) c.abort('killed');
    await this.opts.driver?.close();
  }

  // ---- deploy's phases ----------------------------------------------------

  /** The definition decoded, its spec and options checked, defaults applied (not yet versioned). */
  private decode(
    u: unknown,
    principal: string,
  ): E.Either<DeployError, Omit<FunctionInfo, 'version' | 'createdAt' | 'updatedAt'>> {
    const d = decodeExact(FunctionSpecC, 'function', u, 'function');
    if (E.isLeft(d)) return d;
    const f = d.right;
    const id = functionKey(f.name);
    if (!isValidName(f.name)) return E.left(invalidEntry(`not a valid function name: ${JSON.stringify(f.name)}`, id, ['name']));
    if ((f.minContainers ?? 0) > (f.maxContainers ?? FUNCTION_DEFAULTS.maxContainers))
      return E.left(invalidEntry('minContainers exceeds maxContainers', id, ['minContainers']));
    const spec = this.decodeSpec(id, f.spec);
    if (E.isLeft(spec)) return spec;
    const options = decodeExecutorOptions(id, f.options, this.w.executor.backendOptions ?? t.type({}));
    if (E.isLeft(options)) return options;
    const image = this.imageOf(id, f.image, principal);
    if (E.isLeft(image)) return image;
    return E.right({
      name: f.name,
      owner: principal,
      image: image.right,
      spec: spec.right,
      options: options.right,
      reuse: f.reuse ?? FUNCTION_DEFAULTS.reuse,
      concurrency: f.reuse === 'per-function' ? (f.concurrency ?? 1) : 1,
      minContainers: f.minContainers ?? FUNCTION_DEFAULTS.minContainers,
      maxContainers: f.maxContainers ?? FUNCTION_DEFAULTS.maxContainers,
      idleMs: f.idleMs ?? FUNCTION_DEFAULTS.idleMs,
      public: f.public ?? false,
      ...(f.description === undefined ? {} : { description: f.description }),
    });
  }

  /** The spec template: a task spec of one process that takes input (no daemon, no restart). */
  private decodeSpec(id: string, u: unknown): E.Either<DeployError, TaskSpec> {
    const s = decodeTaskSpec(id, u);
    if (E.isLeft(s)) return E.left({ ...s.left, keys: s.left.keys.map((k) => `spec.${k}`) });
    if (s.right.daemon === true || s.right.restart !== undefined)
      return E.left(invalidEntry('a function runs one process per invocation: no daemon, no restart', id, ['spec.daemon']));
    if ((s.right.credentials ?? []).length > 0)
      return E.left(unsupported(id, 'spec.credentials', 'functions take no credentials: pass what they need as input'));
    const spec: TaskSpec = { ...s.right, interaction: { ...s.right.interaction, stdin: true } };
    const refused = unsupportedField(id, { ...spec, interaction: { ...spec.interaction, stdin: false } });
    return refused === undefined ? E.right(spec) : E.left(refused);
  }

  /** The image: an image element the caller may compose. */
  private imageOf(id: string, u: string, principal: string): E.Either<DeployError, string> {
    if (kindOfKey(u) !== 'image')
      return E.left(invalidEntry('image must be an image ID (image://<store>/<name>)', id, ['image']));
    const el = this.w.registry.get(u);
    if (el === undefined) return E.left(notFound(u));
    if (!this.w.authorize(principal, 'compose', u, el)) return E.left(permissionDenied(u, principal, 'compose'));
    return E.right(el.id.key);
  }

  /** Stores a decoded definition under its lock: a new version when it changed, the same when not. */
  private async store(
    d: Omit<FunctionInfo, 'version' | 'createdAt' | 'updatedAt'>,
    principal: string,
  ): Promise<E.Either<DeployError, FunctionInfo>> {
    const prev = this.w.registry.functions().find((f) => f.name === d.name);
    if (prev !== undefined && !this.authorize(principal, 'deploy', prev)) return E.left(nameCollision(functionKey(d.name)));
    if (prev === undefined && !this.authorize(principal, 'deploy', undefined))
      return E.left(permissionDenied(functionKey(d.name), principal, 'create'));
    const now = new Date().toISOString();
    const next: FunctionInfo = {
      ...d,
      owner: prev?.owner ?? d.owner,
      version: (prev?.version ?? 0) + 1,
      createdAt: prev?.createdAt ?? now,
      updatedAt: now,
    };
    if (prev !== undefined && definitionOf(prev) === definitionOf(next)) return E.right(prev);
    await this.w.registry.commit({
      putFunction: [next],
      events: [
        {
          type: 'deployed',
          id: functionKey(next.name),
          revision: next.version,
          detail: { owner: next.owner, version: next.version },
        },
      ],
    });
    await this.opts.driver
      ?.deployed(next)
      .catch((err: unknown) =>
        this.w.log.warn({ function: next.name, err: String(err) }, 'functions: could not prepare containers'),
      );
    return E.right(next);
  }

  // ---- reads and invocations ----------------------------------------------

  /** The function `name` if the caller may `op` it: one it may not read is `NotFound`. */
  private visible(name: unknown, ctx: unknown, op: FunctionOperation): E.Either<FunctionError, FunctionInfo> {
    if (!isValidName(name)) return E.left(invalidEntry(`not a valid function name: ${showValue(name)}`, 'function', ['name']));
    const c = contextOf(idOf(name), ctx);
    if (E.isLeft(c)) return c;
    const principal = principalOf(c.right);
    const f = this.w.registry.functions().find((x) => x.name === name);
    if (f === undefined || !this.authorize(principal, 'read', f)) return E.left(notFound(functionKey(name)));
    if (!this.authorize(principal, op, f))
      return E.left(permissionDenied(functionKey(name), principal, op === 'remove' ? 'delete' : 'update'));
    return E.right(f);
  }

  /** One invocation: the deadline and the caller's signal abort it; its end is recorded. */
  private async call(
    driver: FunctionDriver,
    f: FunctionInfo,
    stdin: AsyncIterable<Uint8Array>,
    signal: AbortSignal | undefined,
  ): Promise<E.Either<InvokeError, Invocation>> {
    const id = randomUUID();
    const stop = new AbortController();
    const why = (): EndReason | undefined =>
      stop.signal.aborted
        ? stop.signal.reason === 'deadline'
          ? 'deadline'
          : stop.signal.reason === 'killed'
            ? 'killed'
            : 'aborted'
        : undefined;
    const onAbort = (): void => stop.abort('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    const deadline = f.spec.limits?.deadlineMs;
    const timer = deadline === undefined ? undefined : setTimeout(() => stop.abort('deadline'), deadline);
    const running = this.running.get(f.name) ?? new Map<AbortController, Promise<unknown>>();
    this.running.set(f.name, running);
    const out = new Collected(f.spec.limits?.outputBytes ?? this.outputBytes);
    const started = Date.now();
    try {
      const input = new TrackedInput(stdin);
      const pending = driver.invoke({
        id,
        fn: f,
        stdin: input,
        output: (s, d) => out.add(s, d),
        signal: stop.signal,
        spoiled: async () => out.truncated || (await input.unread()),
      });
      running.set(stop, pending);
      const r = await pending;
      if (E.isLeft(r)) return this.failed(f, id, started, r.left);
      if (r.right.reason === 'lost' && why() === undefined)
        return this.failed(
          f,
          id,
          started,
          unavailable(functionKey(f.name), 'the container of the invocation died under it (it is discarded)'),
        );
      if (why() === 'aborted') return E.left(aborted(functionKey(f.name), signal?.reason));
      const stopped = why();
      const end = stopped === undefined ? r.right : { ...r.right, reason: stopped, exitCode: null };
      return E.right(await this.finish(f, id, started, out, end));
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      running.delete(stop);
    }
  }

  /** A driver error: counted, logged in the function's log, answered. */
  private async failed(f: FunctionInfo, id: string, started: number, err: InvokeError): Promise<E.Either<InvokeError, never>> {
    this.record(f, {
      id,
      version: f.version,
      startedAt: new Date(started).toISOString(),
      durationMs: Date.now() - started,
      exitCode: null,
      reason: 'lost',
      cold: false,
      stderrTail: err.message,
    });
    return E.left(err);
  }

  /** Counts, logs and announces an ended invocation; answers it. */
  private async finish(
    f: FunctionInfo,
    id: string,
    started: number,
    out: Collected,
    end: { exitCode: number | null; reason: EndReason; cold: boolean },
  ): Promise<Invocation> {
    const durationMs = Date.now() - started;
    const stderr = joined(out.stderr);
    const startedAt = new Date(started).toISOString();
    this.record(f, {
      id,
      version: f.version,
      startedAt,
      durationMs,
      exitCode: end.exitCode,
      reason: end.reason,
      cold: end.cold,
      stderrTail: tailOf(stderr),
    });
    await this.w.registry
      .commit({
        events: [
          {
            type: 'invoked',
            id: functionKey(f.name),
            revision: f.version,
            detail: {
              invocation: id,
              owner: f.owner,
              version: f.version,
              exitCode: end.exitCode,
              reason: end.reason,
              durationMs,
              cold: end.cold,
              stderrBytes: out.stderrBytes,
            },
          },
        ],
      })
      .catch((err: unknown) => this.w.log.warn({ function: f.name, err: String(err) }, 'functions: invoked event not written'));
    return {
      id,
      function: f.name,
      version: f.version,
      exitCode: end.exitCode,
      reason: end.reason,
      stdout: joined(out.stdout),
      stderr,
      truncated: out.truncated,
      cold: end.cold,
      startedAt,
      durationMs,
    };
  }

  /** Counts an invocation and keeps it in the function's log. */
  private record(f: FunctionInfo, r: InvocationRecord): void {
    const g = this.figures.get(f.name) ?? { invocations: 0, errors: 0, cold: 0, warm: 0, log: [] };
    this.figures.set(f.name, g);
    g.invocations++;
    if (r.exitCode !== 0 || r.reason !== 'exited') g.errors++;
    if (r.cold) g.cold++;
    else g.warm++;
    g.log.unshift(r);
    if (g.log.length > LOG_SIZE) g.log.length = LOG_SIZE;
  }
}
