/**
 * Event fan-out: `subscribe` (mitt inside, handler errors isolated) and `stream`
 * (bounded async iterable with replay from the durable log and an overflow policy).
 */
import mittDefault, { type Emitter } from 'mitt';
import {
  eventMatches,
  invalidEntry,
  LesslError,
  runtimeError,
  type EventFilter,
  type EventSource,
  type EventStream,
  type LesslEvent,
  type StreamOptions,
  type Unsubscribe,
} from '@lessl/core';

/** Reads durable events with `from <= seq <= to`, in order, in pages. */
export type LogReader = (from: number, to: number, limit: number) => Promise<readonly LesslEvent[]>;

type Events = { event: LesslEvent };
// mitt ships CJS-style typings; at runtime the ESM default export is the factory.
const mitt = mittDefault as unknown as typeof mittDefault.default;

/** The event hub. Publishing is the registry's job, after the change is durable. */
export class EventHub implements EventSource {
  private readonly emitter: Emitter<Events> = mitt<Events>();
  private published = 0;
  /** Handler exceptions caught so far (they never reach the publisher or other handlers). */
  handlerErrors = 0;

  constructor(
    private readonly readLog: LogReader,
    startSeq: number,
    private readonly onHandlerError?: (err: unknown, e: LesslEvent) => void,
  ) {
    this.published = startSeq;
  }

  /** Last published seq. */
  lastSeq(): number {
    return this.published;
  }

  /** Publishes durable events in seq order. */
  publish(events: readonly LesslEvent[]): void {
    for (const e of events) {
      this.published = e.seq;
      this.emitter.emit('event', e);
    }
  }

  subscribe(filter: EventFilter, handler: (e: LesslEvent) => void): Unsubscribe {
    const wrapped = (e: LesslEvent): void => {
      if (!eventMatches(filter, e)) return;
      try {
        handler(e);
      } catch (err) {
        this.handlerErrors++;
        this.onHandlerError?.(err, e);
      }
    };
    this.emitter.on('event', wrapped);
    return () => this.emitter.off('event', wrapped);
  }

  stream(filter: EventFilter, opts: StreamOptions = {}): EventStream {
    return new HubStream(this, this.readLog, filter, opts);
  }

  /** @internal live listener for streams (no filter, no isolation needed). */
  listen(fn: (e: LesslEvent) => void): Unsubscribe {
    this.emitter.on('event', fn);
    return () => this.emitter.off('event', fn);
  }
}

const badOptions = (opts: StreamOptions): string | undefined => {
  if (opts.since !== undefined && (!Number.isInteger(opts.since) || opts.since < 0))
    return 'since must be a non-negative integer';
  if (opts.highWaterMark !== undefined && (!Number.isInteger(opts.highWaterMark) || opts.highWaterMark < 1))
    return 'highWaterMark must be a positive integer';
  if (opts.overflow !== undefined && opts.overflow !== 'error' && opts.overflow !== 'drop-oldest')
    return 'overflow must be "error" or "drop-oldest"';
  return undefined;
};

class HubStream implements EventStream {
  dropped = 0;
  private readonly queue: LesslEvent[] = [];
  private readonly hwm: number;
  private nextSeq: number;
  private live = false;
  private closed = false;
  private failure: LesslError | undefined;
  private wake: (() => void) | undefined;
  private unlisten: Unsubscribe | undefined;
  private replaying: Promise<void> | undefined;

  constructor(
    private readonly hub: EventHub,
    private readonly readLog: LogReader,
    private readonly filter: EventFilter,
    private readonly opts: StreamOptions,
  ) {
    this.hwm = opts.highWaterMark ?? 1024;
    const bad = badOptions(opts);
    this.nextSeq = (opts.since ?? hub.lastSeq()) + 1;
    if (bad !== undefined) {
      this.failure = new LesslError(invalidEntry(`invalid stream options: ${bad}`, '', ['options']));
      return;
    }
    this.unlisten = hub.listen((e) => this.onLive(e));
    if (opts.signal !== undefined) {
      if (opts.signal.aborted) this.close();
      else opts.signal.addEventListener('abort', () => this.close(), { once: true });
    }
    if (this.nextSeq > hub.lastSeq()) this.live = true;
  }

  private notify(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private onLive(e: LesslEvent): void {
    if (!this.live || this.closed || this.failure !== undefined) return;
    if (e.seq < this.nextSeq) return; // already delivered
    if (e.seq > this.nextSeq) {
      // cannot happen with in-order publishing; recover by replaying the gap from the log
      this.live = false;
      this.notify();
      return;
    }
    this.nextSeq = e.seq + 1;
    if (!eventMatches(this.filter, e)) return;
    if (this.queue.length >= this.hwm) {
      if (this.opts.overflow === 'drop-oldest') {
        this.queue.shift();
        this.dropped++;
      } else {
        this.failure = new LesslError(
          runtimeError('', `event stream overflow: consumer fell ${this.hwm} events behind (overflow policy "error")`),
        );
        this.stop();
        this.notify();
        return;
      }
    }
    this.queue.push(e);
    this.notify();
  }

  /** Replays from the log until caught up, respecting the queue bound. */
  private async replay(): Promise<void> {
    while (!this.closed && !this.live) {
      const to = this.hub.lastSeq();
      if (this.nextSeq > to) {
        this.live = true;
        return;
      }
      const room = Math.max(1, this.hwm - this.queue.length);
      const page = await this.readLog(this.nextSeq, to, Math.min(room, 4096));
      if (page.length === 0) {
        this.failure = new LesslError(runtimeError('', `event log has no events from seq ${this.nextSeq}`));
        return;
      }
      for (const e of page) {
        this.nextSeq = e.seq + 1;
        if (eventMatches(this.filter, e)) this.queue.push(e);
      }
      if (this.queue.length >= this.hwm) return; // let the consumer drain
    }
  }

  private stop(): void {
    this.unlisten?.();
    this.unlisten = undefined;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.stop();
    this.notify();
  }

  async next(): Promise<IteratorResult<LesslEvent>> {
    for (;;) {
      const head = this.queue.shift();
      if (head !== undefined) return { value: head, done: false };
      if (this.failure !== undefined) {
        const f = this.failure;
        this.closed = true;
        this.stop();
        throw f;
      }
      if (this.closed) return { value: undefined, done: true };
      if (!this.live) {
        this.replaying ??= this.replay().finally(() => (this.replaying = undefined));
        await this.replaying;
        continue;
      }
      await new Promise<void>((res) => (this.wake = res));
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<LesslEvent> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { value: undefined, done: true };
      },
    };
  }
}
