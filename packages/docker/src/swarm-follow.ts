/**
 * Follows a Swarm service's task to its end: output from the service's log as it arrives; once
 * the task is final (and Swarm will not start another), the rest of the log, then the exit code
 * from the task; the service is removed once the end is durable.
 */
import type { Readable } from 'node:stream';
import type { EndReason } from '@lessl/core';
import type { RunSink } from '@lessl/kit';
import { statusOf } from './errors.js';
import { Demux } from './output.js';
import { isFinal, POLL_MS, restartOf, sleep, type SwarmServices, type SwarmTask } from './swarm-service.js';

/** How a service's task ended. */
interface End {
  exitCode: number | null;
  reason: EndReason;
}

/** True when Swarm will not start the task again after it ended with `exitCode` (its restart policy). */
const gaveUp = (policy: ReturnType<typeof restartOf>, tasks: readonly SwarmTask[], exitCode: number | null): boolean => {
  if (policy.Condition === 'none') return true;
  if (policy.Condition !== 'on-failure') return false;
  const max = policy.MaxAttempts ?? 0;
  return exitCode === 0 || (max > 0 && tasks.length > max);
};

/** One followed run of a service; `stop` ends the following (the backend closes). */
export class ServiceFollower {
  private delivered: number;
  private live: Readable | undefined;
  private stopped = false;
  private readonly policy: ReturnType<typeof restartOf>;

  constructor(
    private readonly services: SwarmServices,
    private readonly sink: RunSink,
    private readonly serviceId: string,
    private readonly skip: number,
  ) {
    this.delivered = skip;
    this.policy = restartOf(sink.spec);
  }

  /** Stops following (the run is followed again on the next open). */
  stop(): void {
    this.stopped = true;
    this.live?.destroy();
  }

  private readonly out = (s: 'stdout' | 'stderr', data: Uint8Array): void => {
    this.delivered += data.length;
    this.sink.output(s, data);
  };

  private get reads(): boolean {
    return this.sink.spec.log?.destination !== 'none';
  }

  /** The task's end once it is final for good (scaled down, or its policy gave up); undefined until then. */
  private async ended(): Promise<End | undefined> {
    try {
      const ts = await this.services.tasksOf(this.serviceId);
      const svc = await this.services.inspect(this.serviceId);
      const last = ts[ts.length - 1];
      if (last === undefined || !isFinal(last)) return undefined;
      const exitCode = last.Status?.ContainerStatus?.ExitCode ?? null;
      const scaledDown = svc.Spec?.Mode?.Replicated?.Replicas === 0;
      if (!scaledDown && !gaveUp(this.policy, ts, exitCode)) return undefined;
      if (ts.some((x) => !isFinal(x))) return undefined;
      return { exitCode, reason: 'exited' };
    } catch (err) {
      if (statusOf(err) === 404) return { exitCode: null, reason: 'lost' };
      return undefined; // the manager did not answer this time: ask again (stop() stops asking)
    }
  }

  /** Reads the live log in the background. */
  private async readLive(): Promise<void> {
    if (!this.reads) return;
    const live = await this.services.logStream(this.serviceId, true);
    this.live = live;
    if (this.stopped) live.destroy();
    void new Demux(this.out, this.skip).drain(live);
  }

  /** Polls until the task has ended for good; undefined when stopped first. */
  private async waitEnd(): Promise<End | undefined> {
    let end: End | undefined;
    while (!this.stopped && (end = await this.ended()) === undefined) await sleep(POLL_MS);
    this.live?.destroy();
    return this.stopped ? undefined : end;
  }

  /** Reads what the live log had not handed on yet; a command that does not exist is `not-found`. */
  private async readRest(end: End): Promise<End> {
    if (!this.reads || end.reason === 'lost') return end;
    const rest = new Demux(this.out, this.delivered);
    await rest.drain(await this.services.logStream(this.serviceId, false));
    return end.reason === 'exited' && rest.notFound(end.exitCode) ? { ...end, reason: 'not-found' } : end;
  }

  /** Follows the run to its end and reports it; `done` runs once it is over (reported or not). */
  async run(done: () => void): Promise<void> {
    await this.readLive();
    const waited = await this.waitEnd();
    if (waited === undefined) return;
    const end = await this.readRest(waited);
    done();
    await this.sink.end({
      ...end,
      executor: { state: 'stopped', serviceId: null, containerId: null, mainTask: null },
      cleanup: () => this.services.remove(this.serviceId),
    });
  }
}

/** Follows a service's run in the background; `followers` holds it until its end is reported. */
export const followService = (
  services: SwarmServices,
  followers: Set<{ stop(): void }>,
  sink: RunSink,
  serviceId: string,
  skip: number,
): void => {
  const f = new ServiceFollower(services, sink, serviceId, skip);
  followers.add(f);
  void f.run(() => followers.delete(f)).catch(() => followers.delete(f));
};
