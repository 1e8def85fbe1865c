/**
 * Functions on Docker (docs/functions.md): every invocation runs through lessl-agent in a
 * container of its function's current version, so a warm invocation makes no Docker API call.
 * `per-function`: a fleet of up to `maxContainers` containers, each running up to `concurrency`
 * invocations at once, reused until idle for `idleMs` (then removed: scale to zero; `minContainers`
 * are kept while the function is in use). `per-invocation`: each container serves one invocation
 * and is removed after it; `minContainers` are kept ready ahead of need. A container whose
 * invocation did not exit by itself (deadline, kill, a lost agent) is discarded, never reused;
 * so is every container of an older version once its invocations end. Containers carry this
 * registry's label and their function's: the next open removes what a crash left.
 */
import * as E from 'fp-ts/lib/Either.js';
import {
  logError,
  notFound,
  runtimeError,
  type AnyError,
  type ContainerCounts,
  type FunctionInfo,
  type InvokeError,
} from '@lessl/core';
import { countContainers, type DriverInvocation, type DriverInvoked, type FunctionDriver, type RegistryReads } from '@lessl/kit';
import { AgentContainer } from './agent/container.js';
import { imageIdOf } from './attributes.js';
import { containerBase } from './executor-settings.js';
import type { Host } from './host.js';
import { functionLabels } from './labels.js';
import type { ContainerBase } from './pool.js';

/** One container of a fleet: its agent, the invocations it runs now, since when it is idle. */
interface Box {
  readonly agent: AgentContainer;
  busy: number;
  idleSince: number;
}

/** The containers of one function version. */
interface Fleet {
  readonly fn: FunctionInfo;
  readonly base: ContainerBase;
  readonly boxes: Box[];
  starting: number;
  lastUse: number;
  retired: boolean;
  /** Invocations waiting for room, woken one at a time as containers free up. */
  readonly waiting: (() => void)[];
  /** Removals of its containers under way (`retire` waits for them). */
  readonly removing: Set<Promise<void>>;
}

/**
 * What `take` answers: a container with room and whether it was started for this invocation, or
 * `undefined` when the invocation was stopped (aborted, or its function removed) while it waited.
 */
type Taken = E.Either<InvokeError, { readonly box: Box; readonly cold: boolean } | undefined>;

/** The functions driver of a Docker backend (see the module comment). */
export class DockerFunctions implements FunctionDriver {
  private readonly fleets = new Map<string, Fleet>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly host: Host,
    private readonly registry: RegistryReads,
  ) {
    this.timer = setInterval(() => this.housekeep(), 1000);
    this.timer.unref();
  }

  async invoke(inv: DriverInvocation): Promise<E.Either<InvokeError, DriverInvoked>> {
    const fleet = this.fleetOf(inv.fn);
    if (E.isLeft(fleet)) return fleet;
    const taken = await this.take(fleet.right, inv.signal);
    if (E.isLeft(taken)) return taken;
    if (taken.right === undefined) return E.right({ exitCode: null, reason: 'killed', cold: false });
    const { box, cold } = taken.right;
    const spec = inv.fn.spec;
    const run = box.agent.run({
      argv: spec.cmd,
      env: Object.entries(spec.env ?? {}).map(([k, v]) => `${k}=${v}`),
      ...(spec.pwd === undefined ? {} : { cwd: spec.pwd }),
      ...(spec.user === undefined ? {} : { user: spec.user }),
      stdin: inv.stdin,
      output: inv.output,
      signal: inv.signal,
    });
    if (E.isLeft(run)) {
      this.give(fleet.right, box, false);
      return run;
    }
    const end = await run.right.done;
    const clean = (end.reason === 'exited' || end.reason === 'not-found') && !(await inv.spoiled());
    this.give(fleet.right, box, clean);
    return E.right({ exitCode: end.exitCode, reason: end.reason, cold });
  }

  async deployed(fn: FunctionInfo): Promise<void> {
    const fleet = this.fleetOf(fn);
    if (E.isRight(fleet)) this.fill(fleet.right);
  }

  async removed(fn: FunctionInfo): Promise<void> {
    const fleet = this.fleets.get(fn.name);
    this.fleets.delete(fn.name);
    if (fleet !== undefined) await this.retire(fleet);
  }

  containers(name: string): ContainerCounts {
    return countContainers(this.fleets.get(name));
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const all = [...this.fleets.values()];
    this.fleets.clear();
    for (const f of all) await this.retire(f);
  }

  /** The fleet of a function's current version; a new version retires the older fleet. */
  private fleetOf(fn: FunctionInfo): E.Either<InvokeError, Fleet> {
    const cur = this.fleets.get(fn.name);
    if (cur !== undefined && cur.fn.version === fn.version && cur.fn.updatedAt === fn.updatedAt) return E.right(cur);
    const image = this.registry.get(fn.image);
    if (image === undefined || imageIdOf(image) === '') return E.left(notFound(fn.image));
    const base = containerBase(imageIdOf(image), fn.options, fn.spec.limits ?? {});
    const fleet: Fleet = {
      fn,
      base,
      boxes: [],
      starting: 0,
      lastUse: Date.now(),
      retired: false,
      waiting: [],
      removing: new Set(),
    };
    this.fleets.set(fn.name, fleet);
    if (cur !== undefined) void this.retire(cur);
    return E.right(fleet);
  }

  /** A container with room: an idle one (warm), a new one (cold) within `maxContainers`, or the next one freed. */
  private async take(fleet: Fleet, signal: AbortSignal): Promise<Taken> {
    fleet.lastUse = Date.now();
    for (let cold = false; ; cold = true) {
      if (signal.aborted || fleet.retired) return E.right(undefined);
      const room = fleet.boxes.find(
        (b) => !b.agent.broken && b.busy < (fleet.fn.reuse === 'per-function' ? fleet.fn.concurrency : 1),
      );
      if (room !== undefined) {
        room.busy++;
        if (fleet.fn.reuse === 'per-invocation') this.refillSoon(fleet);
        return E.right({ box: room, cold });
      }
      // a container already starting serves the first waiter: start another only when none is
      if (fleet.starting === 0 && fleet.boxes.length < fleet.fn.maxContainers) {
        const made = await this.start(fleet, true);
        return E.isLeft(made) ? made : E.right({ box: made.right, cold: true });
      }
      await new Promise<void>((res) => {
        const wake = (): void => {
          signal.removeEventListener('abort', wake);
          res();
        };
        fleet.waiting.push(wake);
        signal.addEventListener('abort', wake, { once: true });
      });
    }
  }

  /** Gives a container back: kept when `reusable` and the policy allows, else removed; wakes a waiter. */
  private give(fleet: Fleet, box: Box, reusable: boolean): void {
    box.busy--;
    box.idleSince = Date.now();
    const keep = reusable && !box.agent.broken && !fleet.retired && fleet.fn.reuse === 'per-function';
    if (!keep) {
      fleet.boxes.splice(fleet.boxes.indexOf(box), 1);
      this.discard(fleet, box);
      if (!fleet.retired) this.fill(fleet);
    }
    fleet.waiting.shift()?.();
  }

  /**
   * Starts one container of the fleet (its agent answering), counted as starting meanwhile;
   * `claimed`: it starts with one invocation (the caller's) already running in it.
   */
  private async start(fleet: Fleet, claimed = false): Promise<E.Either<InvokeError, Box>> {
    fleet.starting++;
    try {
      const made = await AgentContainer.start(this.host, {
        image: fleet.base.Image,
        hostConfig: fleet.base.HostConfig,
        labels: functionLabels(this.host.instance, fleet.fn.name, fleet.fn.version),
      });
      if (E.isLeft(made)) return E.left(asInvokeError(made.left));
      const box: Box = { agent: made.right, busy: claimed ? 1 : 0, idleSince: Date.now() };
      if (fleet.retired) {
        await made.right.remove();
        return E.left(notFound(`function://${fleet.fn.name}`));
      }
      fleet.boxes.push(box);
      // its room beyond the invocation that asked for it goes to the invocations waiting
      for (const w of fleet.waiting.splice(0)) w();
      return E.right(box);
    } finally {
      fleet.starting--;
    }
  }

  /** Starts containers up to `minContainers` ready, in the background, while the function is in use. */
  private fill(fleet: Fleet): void {
    const idle = Date.now() - fleet.lastUse > fleet.fn.idleMs;
    const ready = (): number => fleet.boxes.filter((b) => b.busy === 0).length + fleet.starting;
    while (
      !fleet.retired &&
      !idle &&
      ready() < fleet.fn.minContainers &&
      fleet.boxes.length + fleet.starting < fleet.fn.maxContainers
    )
      void this.start(fleet).then((made) => {
        if (E.isLeft(made)) {
          fleet.waiting.shift()?.();
          this.host.logger.warn({ function: fleet.fn.name, err: logError(made.left) }, 'functions: could not start a container');
        }
      });
  }

  /** A `per-invocation` fleet refills after its invocation's own start, not beside it (it would slow it down). */
  private refillSoon(fleet: Fleet): void {
    setTimeout(() => this.fill(fleet), 200).unref();
  }

  /** Removes a fleet's containers: idle ones now, busy ones once their invocations end. */
  private async retire(fleet: Fleet): Promise<void> {
    fleet.retired = true;
    for (const w of fleet.waiting.splice(0)) w();
    const idle = fleet.boxes.filter((b) => b.busy === 0);
    for (const b of idle) {
      fleet.boxes.splice(fleet.boxes.indexOf(b), 1);
      this.discard(fleet, b);
    }
    await Promise.all(fleet.removing);
  }

  /** Removes a container (already out of `boxes`), tracked so that `retire` can wait for it. */
  private discard(fleet: Fleet, box: Box): void {
    const gone = box.agent.remove().finally(() => fleet.removing.delete(gone));
    fleet.removing.add(gone);
  }

  /** Scale to zero: idle containers of a function unused for `idleMs` go; broken ones go; the rest refill. */
  private housekeep(): void {
    const now = Date.now();
    for (const f of this.fleets.values()) {
      const unused = now - f.lastUse > f.fn.idleMs;
      for (const b of [...f.boxes])
        if (b.busy === 0 && (b.agent.broken || (unused && now - b.idleSince > f.fn.idleMs))) {
          f.boxes.splice(f.boxes.indexOf(b), 1);
          this.discard(f, b);
        }
      if (!unused) this.fill(f);
    }
  }
}

const INVOKE_TAGS: ReadonlySet<string> = new Set([
  'InvalidEntry',
  'NotFound',
  'PermissionDenied',
  'RuntimeError',
  'Unavailable',
  'Unsupported',
  'Aborted',
]);
const isInvokeError = (err: AnyError): err is InvokeError => INVOKE_TAGS.has(err._tag);

/** Why a container could not start, as an invocation's error (a tag outside them: `RuntimeError`). */
const asInvokeError = (err: AnyError): InvokeError => (isInvokeError(err) ? err : runtimeError(err.id, err.message, err));
