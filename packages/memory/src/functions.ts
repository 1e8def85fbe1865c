/**
 * The memory backend's functions driver: invocations run as fake processes (as tasks do), in
 * containers that are only counted, so that reuse, sizes, cold and warm starts and scale to zero
 * behave as on a real backend: a `per-function` function reuses its idle containers (up to
 * `concurrency` invocations each), starts one (cold) while it has fewer than `maxContainers`,
 * else its invocations wait; `per-invocation` containers serve one invocation each. Idle
 * containers go after `idleMs`.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { ContainerCounts, FunctionInfo } from '@lessl/core';
import { countContainers, type DriverInvocation, type DriverInvoked, type FunctionDriver } from '@lessl/kit';
import { FakeStdin, fakeIO } from './executor.js';
import type { FakeExit, FakeProcess } from './process.js';

/** A counted container: how many invocations it runs now, and since when it is idle. */
interface Box {
  busy: number;
  idleSince: number;
}

/** The containers of one function version. */
interface Fleet {
  fn: FunctionInfo;
  readonly boxes: Box[];
  starting: number;
  readonly waiting: (() => void)[];
}

/** See the module comment. */
export class MemoryFunctions implements FunctionDriver {
  private readonly fleets = new Map<string, Fleet>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly run: FakeProcess) {
    this.timer = setInterval(() => this.scaleDown(), 250);
    this.timer.unref();
  }

  async invoke(inv: DriverInvocation): Promise<E.Either<never, DriverInvoked>> {
    const fleet = this.fleetOf(inv.fn);
    const { box, cold } = await this.take(fleet, inv.signal);
    if (box === undefined) return E.right({ exitCode: null, reason: 'killed', cold });
    try {
      const exit = await this.exec(inv);
      return E.right({
        exitCode: inv.signal.aborted ? null : typeof exit === 'number' ? exit : exit.exitCode,
        reason: inv.signal.aborted ? 'killed' : typeof exit === 'object' && exit.notFound === true ? 'not-found' : 'exited',
        cold,
      });
    } finally {
      this.give(fleet, box, !inv.signal.aborted && !(await inv.spoiled()));
    }
  }

  async deployed(fn: FunctionInfo): Promise<void> {
    const fleet = this.fleetOf(fn);
    while (fleet.boxes.length < fn.minContainers) fleet.boxes.push({ busy: 0, idleSince: Date.now() });
  }

  async removed(fn: FunctionInfo): Promise<void> {
    const fleet = this.fleets.get(fn.name);
    this.fleets.delete(fn.name);
    for (const w of fleet?.waiting.splice(0) ?? []) w();
  }

  containers(name: string): ContainerCounts {
    return countContainers(this.fleets.get(name));
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    for (const f of this.fleets.values()) for (const w of f.waiting.splice(0)) w();
    this.fleets.clear();
  }

  /** The fleet of a function's current version (a new version starts a new fleet). */
  private fleetOf(fn: FunctionInfo): Fleet {
    const cur = this.fleets.get(fn.name);
    if (cur !== undefined && cur.fn.version === fn.version) return cur;
    const fleet: Fleet = { fn, boxes: [], starting: 0, waiting: [] };
    this.fleets.set(fn.name, fleet);
    return fleet;
  }

  /** A container with room: an idle one (warm), a new one (cold), or the next one freed. */
  private async take(fleet: Fleet, signal: AbortSignal): Promise<{ box: Box | undefined; cold: boolean }> {
    let cold = false;
    for (;;) {
      if (signal.aborted) return { box: undefined, cold };
      const room = fleet.boxes.find((b) => (fleet.fn.reuse === 'per-function' ? b.busy < fleet.fn.concurrency : b.busy === 0));
      if (room !== undefined) {
        room.busy++;
        return { box: room, cold };
      }
      if (fleet.boxes.length + fleet.starting < fleet.fn.maxContainers) {
        cold = true;
        fleet.boxes.push({ busy: 0, idleSince: Date.now() });
        continue;
      }
      await new Promise<void>((res) => {
        fleet.waiting.push(res);
        signal.addEventListener('abort', () => res(), { once: true });
      });
    }
  }

  /**
   * Gives a container back: a `per-invocation` one goes (and is replaced up to `minContainers`),
   * and so does one that is not `reusable` (its invocation was stopped or spoiled it).
   */
  private give(fleet: Fleet, box: Box, reusable: boolean): void {
    box.busy--;
    box.idleSince = Date.now();
    if (fleet.fn.reuse === 'per-invocation' || !reusable) {
      fleet.boxes.splice(fleet.boxes.indexOf(box), 1);
      if (fleet.boxes.length < fleet.fn.minContainers) fleet.boxes.push({ busy: 0, idleSince: Date.now() });
    }
    fleet.waiting.shift()?.();
  }

  /** Runs the fake process with the invocation's input and output. */
  private async exec(inv: DriverInvocation): Promise<FakeExit> {
    const stdin = new FakeStdin(inv.stdin, inv.signal);
    const io = fakeIO(inv.output, new Map(), inv.signal, stdin);
    try {
      return await this.run(inv.fn.spec, io);
    } catch (err) {
      io.stderr(`fake process failed: ${err instanceof Error ? err.message : String(err)}\n`);
      return 1;
    } finally {
      stdin.close();
    }
  }

  /** Scale to zero: idle containers of a function not invoked for `idleMs` go (down to none). */
  private scaleDown(): void {
    const now = Date.now();
    for (const f of this.fleets.values())
      for (let i = f.boxes.length - 1; i >= 0; i--) {
        const b = f.boxes[i];
        if (b !== undefined && b.busy === 0 && now - b.idleSince > f.fn.idleMs) f.boxes.splice(i, 1);
      }
  }
}
