/**
 * A host: one engine, its clients (client/), and what the drivers share on it: its health, its
 * load, the images known there, its janitor and its warm pool.
 */
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack } from 'tar-stream';
import { safeLogger, type AnyError, type Logger } from '@lessl/core';
import { dockerClients, type Clients, type CallRunner } from './client/index.js';
import { fromDocker, statusOf, type On409 } from './errors.js';
import { DEFAULT_CALL_TIMEOUT_MS } from './guard.js';
import { Janitor, type Leftover } from './janitor.js';
import { helperImageLabel, helperLabels, isExecutorOf, isHelperOf, labelChanges, type Filters } from './labels.js';
import type { HostState, PlacementHost } from './placement.js';
import { followJson, type Liveness } from './streams.js';

/** The helper image: empty, labelled `lessl.helper=image`, shared by every registry on an engine. */
export const HELPER_IMAGE = 'lessl/helper:empty';

/** A mount of a helper container (a volume by name). */
export interface HelperMount {
  readonly Source: string;
  readonly Target: string;
  readonly ReadOnly?: boolean;
}

/** What the drivers ask of a host's warm pool (pool.ts). */
type AgentContainer = import('./agent/container.js').AgentContainer;
export interface WarmContainers {
  /** Whether a profile with this key exists. */
  has(key: string): boolean;
  /** A ready container of the profile, taken out of the pool, or undefined (a miss). */
  take(key: string): string | undefined;
  /** The in-container agent of a taken container, when it runs one (its tasks run through it, not exec). */
  agentOf(id: string): AgentContainer | undefined;
  /** Gives back a taken container (removed in the background); `dead` when it could not run its task. */
  release(id: string, dead?: boolean): void;
  /** Removes the ready containers made from an image (before the image goes). */
  evict(imageId: string): Promise<void>;
  /** Moves the profiles of a refreshed image to its new content. */
  repoint(oldImageId: string, newImageId: string): Promise<void>;
}

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
 * One engine (a host) and what the drivers share on it: its clients (`clients`, one per
 * resource), its health (state, consecutive failures), its load (executors running there and
 * their memory), the images known to be there, its janitor and its warm pool.
 */
export class Host implements PlacementHost {
  private helperImageMade: Promise<string> | undefined;
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
  /** Removes what lessl made; retries in the background what fails until it is gone. */
  readonly janitor: Janitor;
  /** What recovering interrupted creates removed (listed in the backend's `reconciled`). */
  readonly recovered: string[] = [];
  /** When each image element last gave a task its root filesystem (written to its `lastUsed` attribute in the background). */
  readonly lastUse = new Map<string, number>();
  /** The warm pool (set by the backend). */
  pool: WarmContainers | undefined;

  /** The bound of a call to this engine (`callTimeoutMs`); uploads check the engine this often. */
  callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS;

  /** How uploads to this engine check it is alive (a ping, bounded like every call). */
  get liveness(): Liveness {
    return { everyMs: this.callTimeoutMs, check: () => this.clients.system.ping() };
  }

  /** Where the backend reports what it does (`openDockerBackend({ logger })`; a no-op by default). */
  readonly logger: Logger;

  /** The engine's clients, one per resource (client/): every call goes through them. */
  readonly clients: Clients;

  /**
   * `docker` is the engine's dockerode client (`run` runs the clients' calls: the call guard);
   * `instance` the registry whose objects these are.
   */
  constructor(
    /** @deprecated The raw dockerode client, for the transition: use `clients`. */
    readonly docker: Docker,
    readonly instance: string,
    host: HostSettings = { name: LOCAL_HOST, labels: {}, capacity: {} },
    logger?: Logger,
    run?: CallRunner,
  ) {
    this.logger = safeLogger(logger);
    this.clients = dockerClients(docker, instance, run);
    this.janitor = new Janitor(this.clients, () => this.logger);
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
    this.helperImageMade ??= this.ensureHelperImage();
    this.helperImageMade.catch(() => (this.helperImageMade = undefined));
    return this.helperImageMade;
  }

  private async ensureHelperImage(): Promise<string> {
    try {
      await this.clients.images.inspect(HELPER_IMAGE);
      return HELPER_IMAGE;
    } catch {
      const p = pack();
      p.entry({ name: 'lessl-helper', mode: 0o644 }, 'lessl helper image: never started\n');
      p.finalize();
      const s = await this.clients.images.import(p, {
        repo: 'lessl/helper',
        tag: 'empty',
        changes: labelChanges(helperImageLabel()),
      });
      const r = await followJson(s);
      if (r.error !== undefined) throw new Error(r.error);
      return HELPER_IMAGE;
    }
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
    this.helperImageMade = undefined;
    await this.clients.images.remove(HELPER_IMAGE, { noprune: false }).catch(() => undefined);
  }

  /**
   * Creates a never-started helper container from the helper image (or `image`), with mounts;
   * answers its ID. The helper image is made again when it went between its check and the create
   * (another registry's removal).
   */
  async helper(owner: string, mounts: readonly HelperMount[], image?: string): Promise<string> {
    try {
      return await this.createHelper(owner, mounts, image ?? (await this.helperImage()));
    } catch (err) {
      if (image !== undefined || statusOf(err) !== 404) throw err;
      this.helperImageMade = undefined;
      return this.createHelper(owner, mounts, await this.helperImage());
    }
  }

  /** @deprecated Use `helper` (an ID, for `clients.containers`). */
  async helperContainer(owner: string, mounts: readonly HelperMount[], image?: string): Promise<Docker.Container> {
    return this.docker.getContainer(await this.helper(owner, mounts, image));
  }

  private createHelper(owner: string, mounts: readonly HelperMount[], img: string): Promise<string> {
    return this.clients.containers.create({
      Image: img,
      Cmd: ['/lessl-helper-never-started'],
      Entrypoint: [],
      Labels: helperLabels(this.instance, owner),
      NetworkDisabled: true,
      HostConfig: { NetworkMode: 'none', Mounts: mounts.map((m) => ({ Type: 'volume', ...m })) },
    });
  }

  /**
   * Containers matching `filters` that are not lessl's own executors or helpers of this registry,
   * as `docker:container/<name>`. (lessl's executors are references through their compositions;
   * labels are inherited from images, so only `lessl.task`/`lessl.helper` + this registry mark ours.)
   */
  async foreignUsers(filters: Filters): Promise<string[]> {
    const users = await this.clients.containers.list(filters);
    return users.filter((c) => !isExecutorOf(c.Labels, this.instance) && !isHelperOf(c.Labels, this.instance)).map(containerRef);
  }

  /**
   * Every container matching `filters` but lessl's own helpers, as `docker:container/<name>`
   * (what an `InUse` names when Docker refuses a removal). Empty when the engine cannot list.
   */
  async users(filters: Filters): Promise<string[]> {
    const users = await this.clients.containers.list(filters).catch(() => []);
    return users.filter((c) => !isHelperOf(c.Labels, this.instance)).map(containerRef);
  }

  /**
   * Removes lessl's own leftovers that may hold an image or volume: what the janitor still has
   * to remove, and helper containers among the containers matching `filters`. Resolves to
   * whether there was any.
   */
  async removeOwnHelpers(filters: Filters): Promise<boolean> {
    // what the janitor still has to remove (a finished task's container, a helper) goes first
    const pending = this.janitor.list().length > 0 || this.removing.size > 0;
    await this.settled();
    await this.janitor.kick();
    const users = await this.clients.containers.list(filters).catch(() => []);
    const ours = users.filter((c) => isHelperOf(c.Labels, this.instance));
    for (const c of ours) await this.removeObject('container', c.Id);
    return pending || ours.length > 0;
  }

  /** Removes the helper containers an element's create made (after a crash); answers what it removed. */
  async removeHelpers(owner: string): Promise<string[]> {
    const helpers = await this.clients.containers.listHelpersOf(owner).catch(() => []);
    for (const c of helpers) await this.removeObject('container', c.Id);
    return helpers.map((c) => `container ${c.Names[0] ?? c.Id}`);
  }

  /** Removes a helper container (a dockerode handle or its ID); if the engine fails, the janitor retries until it is gone. */
  async removeQuietly(c: Docker.Container | string): Promise<void> {
    await this.removeObject('container', typeof c === 'string' ? c : c.id);
  }

  /**
   * Removes a Docker object lessl made (forced; an object already gone counts as removed). When
   * the engine fails, the janitor retries it in the background. Resolves to whether it is gone now.
   */
  async removeObject(kind: Leftover['kind'], ref: string): Promise<boolean> {
    this.expected.add(ref);
    return this.janitor.remove({ kind, ref });
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
}
