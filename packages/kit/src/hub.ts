/**
 * Event fan-out: `subscribe` (mitt inside, handler errors isolated) and `stream`
 * (bounded async iterable with replay from the durable log and an overflow policy).
 */
import * as E from 'fp-ts/lib/Either.js';
import mittDefault, { type Emitter } from 'mitt';
import {
  asIs,
  eventMatches,
  decodeOptions,
  StreamOptionsProps,
  invalidEntry,
  invalidFilterSpec,
  LesslError,
  runtimeError,
  validateEventFilter,
  type EventFilter,
  type InvalidEntry,
  type InvalidFilterSpec,
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
  private published: number;
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

  /** Publishes durable events in seq order. Never throws: every listener is isolated. */
  publish(events: readonly LesslEvent[]): void {
    for (const e of events) {
      this.advance(e.seq);
      try {
        this.emitter.emit('event', e);
      } catch (err) {
        this.report(err, e); // a listener outside `subscribe`/`listen` (none in lessl)
      }
    }
  }

  /** @internal The registry moves the published seq on (on open, and past events it could not publish). */
  advance(seq: number): void {
    if (seq > this.published) this.published = seq;
  }

  private floor = 0;
  /** The last seq compacted out of the log (0: none): a replay must start after it. */
  compactedSeq(): number {
    return this.floor;
  }
  /** @internal The registry compacted the log up to `seq` (retention). */
  compacted(seq: number): void {
    if (seq > this.floor) this.floor = seq;
  }

  /** Counts a handler error and passes it to `onHandlerError`; nothing gets out. */
  private report(err: unknown, e: LesslEvent): void {
    this.handlerErrors++;
    try {
      this.onHandlerError?.(err, e);
    } catch {
      // the error reporter failed too; the count above still records it
    }
  }

  /**
   * Subscribes `handler` to the events matching `filter`. Never throws. An invalid filter
   * (see `validateEventFilter`: e.g. `types: null`, a Proxy whose getters throw) or a handler
   * that is not a function subscribes nothing: the handler is never called and the answer is
   * an `Unsubscribe` that does nothing. Use `subscribeChecked` to learn why.
   */
  subscribe(filter: EventFilter, handler: (e: LesslEvent) => void): Unsubscribe {
    const r = this.subscribeChecked(filter, handler);
    return E.isRight(r) ? r.right : asIs(() => undefined);
  }

  /**
   * `subscribe`, answering `InvalidFilterSpec` for an invalid filter or a handler that is not a
   * function. The filter is copied (into fresh arrays) here, once: later changes to the object
   * passed in, or traps in it, cannot reach the publisher or other subscribers. Neither can a
   * throwing handler: its errors are counted in `handlerErrors` and passed to `onHandlerError`.
   */
  subscribeChecked(filter: EventFilter, handler: (e: LesslEvent) => void): E.Either<InvalidFilterSpec, Unsubscribe> {
    const f = validateEventFilter(filter);
    if (E.isLeft(f)) return f;
    if (typeof handler !== 'function') return E.left(invalidFilterSpec('', 'the handler must be a function'));
    const wrapped = (e: LesslEvent): void => {
      if (eventMatches(f.right, e)) this.deliver(handler, e);
    };
    this.emitter.on('event', wrapped);
    return E.right(asIs(() => this.emitter.off('event', wrapped)));
  }

  /**
   * Calls one handler; nothing it throws (nor `onHandlerError`) gets out, nor the rejection of
   * a promise it answers (an async handler): both count as handler errors.
   */
  private deliver(handler: (e: LesslEvent) => unknown, e: LesslEvent): void {
    try {
      const r = handler(e);
      if (r instanceof Promise) r.catch((err: unknown) => this.report(err, e));
    } catch (err) {
      this.report(err, e);
    }
  }

  /**
   * Streams the events matching `filter`. Never throws: an invalid filter (`InvalidFilterSpec`)
   * or invalid options (`InvalidEntry`) make the first `next()` reject with a `LesslError`.
   */
  stream(filter: EventFilter, opts?: StreamOptions): EventStream {
    const f = validateEventFilter(filter);
    if (E.isLeft(f)) return new HubStream(this, this.readLog, {}, {}, f.left);
    const o = readOptions(opts);
    if (E.isLeft(o)) return new HubStream(this, this.readLog, {}, {}, o.left);
    return new HubStream(this, this.readLog, f.right, o.right);
  }

  /** @internal live listener for streams (no filter; isolated like a handler). */
  listen(fn: (e: LesslEvent) => void): Unsubscribe {
    const wrapped = (e: LesslEvent): void => this.deliver(fn, e);
    this.emitter.on('event', wrapped);
    return () => this.emitter.off('event', wrapped);
  }
}

/** A replay from `since` asked for events that retention removed (up to `floor`). */
const compactedError = (since: number, floor: number): InvalidEntry =>
  invalidEntry(
    `since ${since} is older than the retained event log: events up to seq ${floor} were compacted; stream from since >= ${floor}`,
    '',
    ['since'],
  );

/** A copy of stream options, decoded exactly (unknown keys, wrong types: InvalidEntry naming them). Never throws. */
const readOptions = (u: unknown): E.Either<InvalidEntry, StreamOptions> => decodeOptions(StreamOptionsProps, u, 'stream options');

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

  /** `filter` and `opts` are valid copies; with `invalid`, the stream only rejects its first `next()`. */
  constructor(
    private readonly hub: EventHub,
    private readonly readLog: LogReader,
    private readonly filter: EventFilter,
    private readonly opts: StreamOptions,
    invalid?: InvalidFilterSpec | InvalidEntry,
  ) {
    this.hwm = opts.highWaterMark ?? 1024;
    this.nextSeq = (opts.since ?? hub.lastSeq()) + 1;
    if (invalid !== undefined) {
      this.failure = new LesslError(invalid);
      return;
    }
    this.unlisten = hub.listen((e) => this.onLive(e));
    this.watch(opts.signal);
    if (this.nextSeq > hub.lastSeq()) this.live = true;
  }

  /** Closes the stream when `signal` aborts. */
  private watch(signal: AbortSignal | undefined): void {
    if (signal === undefined) return;
    try {
      if (signal.aborted) this.close();
      else signal.addEventListener('abort', () => this.close(), { once: true });
    } catch {
      this.failure = new LesslError(runtimeError('', 'could not watch the abort signal'));
      this.stop();
    }
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

  /** True (and the stream fails) when the next event to replay was removed by retention. */
  private compactedAway(): boolean {
    if (this.nextSeq > this.hub.compactedSeq()) return false;
    this.failure = new LesslError(compactedError(this.nextSeq - 1, this.hub.compactedSeq()));
    return true;
  }

  /** Replays from the log until caught up, respecting the queue bound. */
  private async replay(): Promise<void> {
    while (!this.closed && !this.live) {
      const to = this.hub.lastSeq();
      if (this.nextSeq > to) {
        this.live = true;
        return;
      }
      if (this.compactedAway()) return;
      const room = Math.max(1, this.hwm - this.queue.length);
      const page = await this.readLog(this.nextSeq, to, Math.min(room, 4096));
      if (this.compactedAway()) return;
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

  /** The next event; rejects only with a `LesslError` (a failed log read is a `RuntimeError`). */
  async next(): Promise<IteratorResult<LesslEvent>> {
    try {
      return await this.advance();
    } catch (err) {
      if (err instanceof LesslError) throw err;
      this.close();
      throw new LesslError(runtimeError('', 'the event stream failed', err));
    }
  }

  private async advance(): Promise<IteratorResult<LesslEvent>> {
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
