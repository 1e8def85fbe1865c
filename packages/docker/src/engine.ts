/**
 * The engine handle shared by the drivers: the dockerode client, the registry instance whose
 * objects these are, and the helper image used for archive copies.
 */
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { safeLogger, type AnyError, type Logger } from '@lessl/core';
import { fromDocker, isConnectionError, statusOf, type On409 } from './errors.js';
import { Janitor, type Leftover, type Removal } from './janitor.js';
import { LABEL } from './names.js';
import type { WarmPool } from './pool.js';
import type { HostState, PlacementHost } from './placement.js';

/** The helper image: empty, labelled `lessl.helper=image`, shared by every registry on an engine. */
export const HELPER_IMAGE = 'lessl/helper:empty';

/**
 * Destroys `stream` when it delivers nothing for `ms` (a pull whose registry went silent: the
 * engine waits for it forever). `stalled()` says whether it did; `stop()` ends the watch.
 */
export const watchStall = (stream: NodeJS.ReadableStream, ms: number): { stalled: () => boolean; stop: () => void } => {
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      (stream as NodeJS.ReadableStream & { destroy: (e?: Error) => void }).destroy(new Error(`nothing for ${ms} ms`));
    }, ms);
  };
  stream.on('data', arm);
  arm();
  return { stalled: () => stalled, stop: () => (clearTimeout(timer), stream.removeListener('data', arm)) };
};

/** Reads a Docker JSON-lines progress stream; an `error` inside an HTTP 200 stream is a failure. */
export const followJson = async (
  stream: NodeJS.ReadableStream,
  onMessage?: (m: Record<string, unknown>) => void,
): Promise<{ messages: Record<string, unknown>[]; error?: string }> => {
  const messages: Record<string, unknown>[] = [];
  let rest = '';
  let error: string | undefined;
  for await (const chunk of stream as AsyncIterable<Buffer | string>) {
    rest += chunk.toString();
    const lines = rest.split(/\r?\n/);
    rest = lines.pop() ?? '';
    for (const line of lines) {
      if (line.trim() === '') continue;
      try {
        const m = JSON.parse(line) as Record<string, unknown>;
        messages.push(m);
        onMessage?.(m);
        if (typeof m.error === 'string') error ??= m.error;
        const detail = m.errorDetail as { message?: unknown } | undefined;
        if (typeof detail?.message === 'string') error ??= detail.message;
      } catch {
        messages.push({ raw: line });
      }
    }
  }
  if (rest.trim() !== '') {
    try {
      const m = JSON.parse(rest) as Record<string, unknown>;
      messages.push(m);
      if (typeof m.error === 'string') error ??= m.error;
    } catch {
      messages.push({ raw: rest });
    }
  }
  return error === undefined ? { messages } : { messages, error };
};

/** How an upload makes sure the engine is alive while it waits on it (see `withTar`). */
export interface Liveness {
  /** How long an upload waits between two checks. */
  readonly everyMs: number;
  /** A bounded call to the engine (a ping): its failure fails the upload. */
  readonly check: () => Promise<unknown>;
}

/**
 * Sends a tar stream to Docker: when the stream fails (a refused entry, a broken source), the
 * request is aborted and the stream's own error is thrown, not Docker's view of a cut upload.
 * With `live`, the engine is checked every `everyMs` while the upload (and its answer) is
 * pending: an engine that does not answer (frozen, gone) aborts the request and its error is
 * thrown (`Unavailable`), where the upload would otherwise wait for ever on a socket nobody reads.
 */
export const withTar = async <A>(
  tar: NodeJS.ReadableStream,
  fn: (signal: AbortSignal) => Promise<A>,
  live?: Liveness,
): Promise<A> => {
  const early = (tar as { errored?: unknown }).errored;
  if (early !== null && early !== undefined) throw early; // refused before anyone listened
  const ac = new AbortController();
  let stop: (e: unknown) => void = () => undefined;
  // An aborted request does not always settle: race it against the stream's own failure.
  const failed = new Promise<never>((_, reject) => {
    stop = (e) => {
      ac.abort();
      reject(e);
    };
  });
  failed.catch(() => undefined);
  tar.on('error', (e: unknown) => stop(e));
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const watch = (l: Liveness): void => {
    timer = setTimeout(() => {
      l.check().then(
        () => (done ? undefined : watch(l)),
        (e: unknown) => stop(e),
      );
    }, l.everyMs);
  };
  if (live !== undefined) watch(live);
  try {
    return await Promise.race([fn(ac.signal), failed]);
  } finally {
    done = true;
    clearTimeout(timer);
  }
};

/** Default bound of a call to the engine. */
export const DEFAULT_CALL_TIMEOUT_MS = 30_000;

interface DialOptions {
  path?: string;
  method?: string;
  file?: unknown;
  abortSignal?: AbortSignal;
}
type Dial = (options: DialOptions, callback: (err: unknown, data: unknown) => void) => void;

/** Calls that may rightly stay silent for long: waiting for an exit, the event stream. */
const UNBOUNDED = /\/(wait|events)(\?|$)/;

/** Where the client talks to, for messages. */
export const endpointOf = (docker: Docker): string => {
  const m = docker.modem as unknown as { socketPath?: string; host?: string; port?: number | string; protocol?: string };
  if (typeof m.socketPath === 'string') return `unix://${m.socketPath}`;
  return `${m.protocol ?? 'http'}://${m.host ?? 'localhost'}${m.port === undefined ? '' : `:${m.port}`}`;
};

/** Told of every guarded call's outcome: `reached` is false when the engine could not be reached or timed out. */
export type CallObserver = (reached: boolean, err?: unknown) => void;

/**
 * Bounds every call to the engine: a call that has not answered within `ms` (for streams: has not
 * started within `ms`) is aborted and fails with ETIMEDOUT naming the engine and the call, which
 * maps to `Unavailable`. Uploads and `wait`/`events` are not bounded here (their callers bound them).
 * Connection failures are tagged with `name` (the host) so errors say which engine failed;
 * `observe` hears whether each call reached the engine (per-host error tracking).
 */
export const guardCalls = (docker: Docker, ms: number, name?: string, observe?: CallObserver): void => {
  const modem = docker.modem as unknown as { dial: Dial; lesslGuarded?: boolean; lesslObserve?: CallObserver };
  if (observe !== undefined) modem.lesslObserve = observe; // a client guarded before (at open) gets its host's observer
  if (modem.lesslGuarded === true) return;
  const dial = modem.dial.bind(modem);
  const endpoint = name === undefined ? endpointOf(docker) : `${name} (${endpointOf(docker)})`;
  const tag = (err: unknown): unknown => {
    if (isConnectionError(err) && typeof err === 'object' && err !== null && !('endpoint' in err))
      Object.assign(err, { endpoint });
    return err;
  };
  const seen = (err: unknown): void => modem.lesslObserve?.(!isConnectionError(err), err);
  modem.lesslGuarded = true;
  modem.dial = (options, callback) => {
    if (options.file !== undefined || UNBOUNDED.test(options.path ?? ''))
      return dial(options, (err, data) => {
        seen(err);
        callback(tag(err), data);
      });
    const ac = new AbortController();
    const outer = options.abortSignal;
    if (outer?.aborted === true) ac.abort(outer.reason);
    const relay = (): void => ac.abort(outer?.reason);
    outer?.addEventListener('abort', relay, { once: true });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ac.abort();
    }, ms);
    dial({ ...options, abortSignal: ac.signal }, (err, data) => {
      clearTimeout(timer);
      // a stream that started still answers its caller's abort until it ends (a pull, a build, logs)
      const stream = data as { once?: (ev: string, f: () => void) => void; destroyed?: boolean } | undefined;
      const release = (): void => outer?.removeEventListener('abort', relay);
      if (typeof stream?.once === 'function' && stream.destroyed !== true) stream.once('close', release);
      else release();
      // a call its caller abandoned says nothing about the engine (a health check bounds its own pings)
      if (outer?.aborted === true && !timedOut) return callback(tag(err), data);
      if (timedOut && err !== null && err !== undefined) {
        const e = Object.assign(
          new Error(
            `the Docker engine ${endpoint} did not answer ${options.method ?? 'GET'} ${options.path ?? ''} within ${ms} ms`,
          ),
          { code: 'ETIMEDOUT', endpoint },
        );
        seen(e);
        return callback(e, data);
      }
      seen(err);
      callback(tag(err), data);
    });
  };
};

/** `docker:container/<name>`: how errors name a container. */
const containerRef = (c: Docker.ContainerInfo): string => `docker:container/${(c.Names[0] ?? c.Id).replace(/^\//, '')}`;

/** How reports name an image: its ID, then its first tag when it has one (tags come and go). */
export const imageLabel = (i: Docker.ImageInfo): string => {
  const tag = i.RepoTags?.find((t) => t !== '<none>:<none>');
  return tag === undefined ? i.Id : `${i.Id} (${tag})`;
};

/** What identifies a host and bounds its work (from `HostSpec`). */
export interface HostSettings {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: { readonly slots?: number; readonly memoryBytes?: number };
}

/** The name of the one host of a single-engine backend. */
export const LOCAL_HOST = 'local';

/**
 * One engine (a host) and what the drivers share on it: its client, its health (state,
 * consecutive failures), its load (executors running there and their memory), the images
 * known to be there, its janitor and its warm pool.
 */
export class Engine implements PlacementHost {
  private helper: Promise<string> | undefined;
  /** Fills in progress that use the helper image: the last one out removes it. */
  private helperUses = 0;
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly capacity: HostSettings['capacity'];
  /** Health state (see hosts.ts); a single-engine backend's host is `active` while open. */
  state: HostState = 'active';
  /** When the state last changed (ms since the epoch). */
  stateSince = Date.now();
  /** Calls in a row that did not reach the engine. */
  failures = 0;
  /** The last failure to reach it. */
  lastError: string | undefined;
  /** The error behind `lastError` when a call or ping failed (not a timeout). */
  lastErrorCause: unknown;
  /** Executors running here (executor ID -> the memory limit of its container). */
  private readonly running = new Map<string, number>();
  private reserved = 0;
  /** Docker image IDs known to be present here. */
  readonly images = new Set<string>();
  /** CPUs and memory the engine reports (read by housekeeping). */
  resources: { cpus: number; memoryBytes: number } | undefined;
  /** Docker object IDs lessl is removing itself (so the event watcher does not report them). */
  readonly expected = new Set<string>();
  /** Removals that failed, retried until they succeed. */
  readonly janitor = new Janitor(
    (l) => this.attempt(l),
    () => this.logger,
  );
  /** What recovering interrupted creates removed (listed in the backend's `reconciled`). */
  readonly recovered: string[] = [];
  /** When each image element last gave a task its root filesystem (written to its `lastUsed` attribute in the background). */
  readonly lastUse = new Map<string, number>();
  /** The warm pool (set by the backend). */
  pool: WarmPool | undefined;

  /** The bound of a call to this engine (`callTimeoutMs`); uploads check the engine this often. */
  callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS;

  /** How uploads to this engine check it is alive (a ping, bounded like every call). */
  get liveness(): Liveness {
    return { everyMs: this.callTimeoutMs, check: () => this.docker.ping() };
  }

  /** Where the backend reports what it does (`openDockerBackend({ logger })`; a no-op by default). */
  readonly logger: Logger;

  constructor(
    readonly docker: Docker,
    readonly instance: string,
    host: HostSettings = { name: LOCAL_HOST, labels: {}, capacity: {} },
    logger?: Logger,
  ) {
    this.logger = safeLogger(logger);
    this.name = host.name;
    this.labels = host.labels;
    this.capacity = host.capacity;
  }

  /** Executors running here and the memory they reserve. */
  get load(): { slots: number; memoryBytes: number } {
    return { slots: this.running.size, memoryBytes: this.reserved };
  }

  /** Records that an executor runs here (with its container's memory limit), or no longer does. */
  track(executor: string, memoryBytes: number | undefined): void {
    this.reserved -= this.running.get(executor) ?? 0;
    this.running.delete(executor);
    if (memoryBytes === undefined) return;
    this.running.set(executor, memoryBytes);
    this.reserved += memoryBytes;
  }

  /** The executors running here. */
  executors(): string[] {
    return [...this.running.keys()];
  }

  hasImage(imageId: string): boolean {
    return this.images.has(imageId);
  }

  /** Runs a Docker call, mapping failures. */
  async call<A>(id: string, fn: () => Promise<A>, on409: On409 = 'Conflict'): Promise<E.Either<AnyError, A>> {
    try {
      return E.right(await fn());
    } catch (err) {
      return E.left(fromDocker(id, err, on409));
    }
  }

  /** An empty image for created-but-never-started helper containers (archive copies; see `withHelperImage`). */
  helperImage(): Promise<string> {
    this.helper ??= (async () => {
      const ref = HELPER_IMAGE;
      try {
        await this.docker.getImage(ref).inspect();
        return ref;
      } catch {
        const p = pack();
        p.entry({ name: 'lessl-helper', mode: 0o644 }, 'lessl helper image: never started\n');
        p.finalize();
        const s = await this.docker.importImage(
          p as unknown as NodeJS.ReadableStream,
          { repo: 'lessl/helper', tag: 'empty', changes: [`LABEL ${LABEL.helper}=image`] } as object,
        );
        const r = await followJson(s);
        if (r.error !== undefined) throw new Error(r.error);
        return ref;
      }
    })();
    this.helper.catch(() => (this.helper = undefined));
    return this.helper;
  }

  /**
   * Runs `fn`, which makes helper containers from the helper image and removes them; when the last
   * such run on this engine ends, the helper image is removed too, so none stays between copies.
   * (Docker refuses while another registry's helper container still uses it: that one removes it.)
   */
  async withHelperImage<A>(fn: () => Promise<A>): Promise<A> {
    this.helperUses += 1;
    try {
      return await fn();
    } finally {
      this.helperUses -= 1;
      if (this.helperUses === 0) await this.dropHelperImage();
    }
  }

  private async dropHelperImage(): Promise<void> {
    this.helper = undefined;
    await this.docker
      .getImage(HELPER_IMAGE)
      .remove({ noprune: false })
      .catch(() => undefined);
  }

  /**
   * Creates a never-started helper container from the helper image (or `image`), with mounts. The
   * helper image is made again when it went between its check and the create (another registry's
   * removal).
   */
  async helperContainer(
    owner: string,
    mounts: { Source: string; Target: string; ReadOnly?: boolean }[],
    image?: string,
  ): Promise<Docker.Container> {
    try {
      return await this.createHelper(owner, mounts, image ?? (await this.helperImage()));
    } catch (err) {
      if (image !== undefined || statusOf(err) !== 404) throw err;
      this.helper = undefined;
      return this.createHelper(owner, mounts, await this.helperImage());
    }
  }

  private createHelper(
    owner: string,
    mounts: { Source: string; Target: string; ReadOnly?: boolean }[],
    img: string,
  ): Promise<Docker.Container> {
    return this.docker.createContainer({
      Image: img,
      Cmd: ['/lessl-helper-never-started'],
      Entrypoint: [],
      Labels: { [LABEL.helper]: owner, [LABEL.registry]: this.instance },
      NetworkDisabled: true,
      HostConfig: { NetworkMode: 'none', Mounts: mounts.map((m) => ({ Type: 'volume', ...m })) },
    });
  }

  /**
   * Containers matching `filters` that are not lessl's own executors or helpers of this registry,
   * as `docker:container/<name>`. (lessl's executors are references through their compositions;
   * labels are inherited from images, so only `lessl.task`/`lessl.helper` + this registry mark ours.)
   */
  async foreignUsers(filters: Record<string, string[]>): Promise<string[]> {
    const users = await this.docker.listContainers({ all: true, filters });
    return users
      .filter((c) => !(this.isOurs(c) && (c.Labels[LABEL.task] !== undefined || c.Labels[LABEL.pool] !== undefined)))
      .filter((c) => !this.isHelper(c))
      .map(containerRef);
  }

  /**
   * Every container matching `filters` but lessl's own helpers, as `docker:container/<name>`
   * (what an `InUse` names when Docker refuses a removal). Empty when the engine cannot list.
   */
  async users(filters: Record<string, string[]>): Promise<string[]> {
    const users = await this.docker.listContainers({ all: true, filters }).catch(() => []);
    return users.filter((c) => !this.isHelper(c)).map(containerRef);
  }

  private isOurs(c: Docker.ContainerInfo): c is Docker.ContainerInfo & { Labels: Record<string, string> } {
    return c.Labels?.[LABEL.registry] === this.instance;
  }

  /** A helper container of this registry (never a user anyone should be told about). */
  private isHelper(c: Docker.ContainerInfo): boolean {
    return this.isOurs(c) && c.Labels[LABEL.helper] !== undefined;
  }

  /**
   * Removes lessl's own leftovers that may hold an image or volume: what the janitor still has
   * to remove, and helper containers among the containers matching `filters`. Resolves to
   * whether there was any.
   */
  async removeOwnHelpers(filters: Record<string, string[]>): Promise<boolean> {
    // what the janitor still has to remove (a finished task's container, a helper) goes first
    const pending = this.janitor.list().length > 0 || this.removing.size > 0;
    await this.settled();
    await this.janitor.kick();
    const users = await this.docker.listContainers({ all: true, filters }).catch(() => []);
    const ours = users.filter((c) => this.isHelper(c));
    for (const c of ours) await this.removeObject('container', c.Id);
    return pending || ours.length > 0;
  }

  /** Removes the helper containers an element's create made (after a crash); answers what it removed. */
  async removeHelpers(owner: string): Promise<string[]> {
    const helpers = await this.docker
      .listContainers({ all: true, filters: { label: [`${LABEL.helper}=${owner}`, `${LABEL.registry}=${this.instance}`] } })
      .catch(() => []);
    for (const c of helpers) await this.removeObject('container', c.Id);
    return helpers.map((c) => `container ${c.Names[0] ?? c.Id}`);
  }

  /** Removes a helper container; if the engine fails, the janitor retries until it is gone. */
  async removeQuietly(c: Docker.Container): Promise<void> {
    await this.removeObject('container', c.id);
  }

  /**
   * Removes a Docker object lessl made (forced; an object already gone counts as removed). When
   * the engine fails, the janitor retries it in the background. Resolves to whether it is gone now.
   */
  async removeObject(kind: Leftover['kind'], ref: string): Promise<boolean> {
    this.expected.add(ref);
    const r = await this.attempt({ kind, ref });
    if (r === 'failed') this.janitor.add({ kind, ref });
    return r === 'gone';
  }

  /** Removals started in the background (`removeAfter`), not yet done. */
  private readonly removing = new Set<Promise<boolean>>();

  /**
   * Removes a Docker object once `first` has settled (a task's end made durable), counted as a
   * background removal from now on, so `settled()` (and deleting an image or volume) waits for it.
   */
  removeAfter(first: Promise<unknown>, kind: Leftover['kind'], ref: string): void {
    this.expected.add(ref);
    const p = first
      .catch(() => undefined)
      .then(() => this.removeObject(kind, ref))
      .finally(() => this.removing.delete(p));
    this.removing.add(p);
  }

  /** Waits for the background removals started so far. */
  async settled(): Promise<void> {
    await Promise.all([...this.removing]);
  }

  /** One removal attempt; never throws. */
  private async attempt(l: Leftover): Promise<Removal> {
    try {
      if (l.kind === 'container') await this.docker.getContainer(l.ref).remove({ force: true, v: false });
      else if (l.kind === 'image') await this.docker.getImage(l.ref).remove({ force: true });
      else await this.docker.getVolume(l.ref).remove({ force: true });
      return 'gone';
    } catch (err) {
      return statusOf(err) === 404 ? 'gone' : 'failed';
    }
  }
}
