/**
 * Connections to TCP ports served inside a container, through lessl-agent's connection frames
 * (packages/docker/agent/README.md): one agent channel carries many connections, each handed out
 * as a node `Duplex`. The channel is a warm container's agent (its attach stream) or an exec'd
 * `lessl-agent --forward` (`ExecForwarder`); both feed their frames to a `Forwarder`.
 *
 * Flow control, both ways, per connection: lessl sends at most `CONN_WINDOW` bytes the agent has
 * not written yet (`w` counts them back), and the agent reads at most `CONN_WINDOW` bytes of the
 * peer's that lessl's reader has not taken (`W` counts them back, sent as the stream is read).
 * Both counts go back by halves of the window (a small exchange sends none). A
 * slow reader or writer holds its own connection only, never the others or the runs.
 */
import { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { aborted, unavailable, type Aborted, type Unavailable } from '@lessl/core';
import { encodeFrame, type Frame } from './frames.js';

/** Bytes in flight per connection and way (the agent's `CONN_WINDOW`). */
export const CONN_WINDOW = 256 * 1024;
const CHUNK = 64 * 1024;
/** A connect the agent does not answer this soon is `Unavailable` (a loopback connect answers at once). */
export const CONNECT_MS = 10_000;
/** The frame types the agent answers connections with. */
const CONN_TYPES: ReadonlySet<string> = new Set(['c', 'r', 'd', 'f', 'z', 'w']);

/** Why a connection could not be opened. */
export type ConnectError = Unavailable | Aborted;

/** Why a request got no answer: its wait ran out, or its signal aborted it. */
export type Unanswered = 'timeout' | 'aborted';

/**
 * Waits for the answer to one request of a forwarder's: `ask` keeps the resolver it is given
 * where the answer will find it, and sends the request; `forget` drops the resolver once the wait
 * is over, however it ended ('timeout' after `ms`, 'aborted' by `signal`).
 */
export const awaitAnswer = <A>(
  ask: (answer: (a: A | Unanswered) => void) => void,
  forget: () => void,
  ms: number,
  signal: AbortSignal | undefined,
): Promise<A | Unanswered> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => done('timeout'), ms);
    const onAbort = (): void => done('aborted');
    const done = (a: A | Unanswered): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      forget();
      resolve(a);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    ask(done);
    if (signal?.aborted === true) onAbort();
  });

/** A u32 payload. */
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

/** One connection: the agent's socket to `port`, as a stream (see the module comment). */
class Connection extends Duplex {
  /** Bytes written to the agent, and those it wrote on (`w`). */
  private sent = 0;
  private acked = 0;
  /** Bytes of the peer's the reader has not taken yet (not yet counted back with `W`). */
  private untaken = 0;
  private wake: (() => void) | undefined;
  /** The agent closed it (`z`), or the channel is gone: nothing more to tell the agent. */
  gone = false;

  constructor(
    private readonly link: Forwarder,
    readonly id: number,
    readonly port: number,
  ) {
    super({ allowHalfOpen: true });
  }

  override _read(): void {
    // counted back by halves of the window: the agent, allowed a whole window ahead, never waits
    // on a count held back, and a small exchange sends none
    if (this.untaken < CONN_WINDOW / 2 || this.gone) return;
    this.link.send(encodeFrame('W', this.id, u32(this.untaken)));
    this.untaken = 0;
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.pump(chunk).then(() => cb(), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (!this.gone) this.link.send(encodeFrame('F', this.id));
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.gone) this.link.send(encodeFrame('Z', this.id));
    this.gone = true;
    this.link.forget(this.id);
    this.wake?.();
    cb(err);
  }

  /** Sends `chunk` in frames, at most `CONN_WINDOW` ahead of what the agent wrote on. */
  private async pump(chunk: Buffer): Promise<void> {
    for (let off = 0; off < chunk.length; off += CHUNK) {
      while (!this.gone && this.sent - this.acked >= CONN_WINDOW) await new Promise<void>((r) => (this.wake = r));
      if (this.gone) throw new Error(`port ${this.port}: the connection is closed`);
      const part = chunk.subarray(off, off + CHUNK);
      this.sent += part.length;
      this.link.send(encodeFrame('D', this.id, part));
    }
  }

  /** A frame of the agent's about this connection. */
  receive(f: Frame): void {
    if (f.type === 'd') {
      this.untaken += f.data.length;
      if (this.push(Buffer.from(f.data))) this._read();
    } else if (f.type === 'f') this.push(null);
    else if (f.type === 'w') {
      this.acked += f.data.length >= 4 ? f.data.readUInt32BE(0) : 0;
      this.wake?.();
    } else if (f.type === 'z') {
      this.gone = true;
      const why = f.data.toString();
      if (why !== '') this.destroy(new Error(`port ${this.port}: ${why}`));
      else if (!this.readableEnded) this.push(null);
      this.wake?.();
    }
  }
}

/** A connect waiting for the agent's answer. */
interface Pending {
  readonly port: number;
  readonly answer: (f: Frame | string) => void;
}

/** Hands out connections over one agent channel (see the module comment). */
export class Forwarder {
  private readonly conns = new Map<number, Connection>();
  private readonly pending = new Map<number, Pending>();
  private next = 1;
  private closed: string | undefined;

  /**
   * @param out writes a frame to the agent's channel
   * @param task the task whose ports these are (named in errors)
   */
  constructor(
    private readonly out: (frame: Buffer) => void,
    private readonly task: string,
  ) {}

  /** Connections open. */
  get open(): number {
    return this.conns.size;
  }

  /** Opens a connection to `port` inside the container: refused (nothing listens), the channel gone or no answer: `Unavailable`. */
  async connect(port: number, signal?: AbortSignal): Promise<E.Either<ConnectError, Duplex>> {
    if (this.closed !== undefined) return E.left(this.unavailable(port, this.closed));
    const id = this.next;
    this.next = (this.next % 0xffff_fffe) + 1;
    const answer = await this.ask(id, port, signal);
    if (typeof answer === 'string' || answer.type !== 'c') {
      this.pending.delete(id);
      if (typeof answer === 'string' && answer !== 'closed') this.send(encodeFrame('Z', id));
      if (answer === 'aborted') return E.left(aborted(this.task, signal?.reason));
      const why = typeof answer === 'string' ? (this.closed ?? 'the agent did not answer') : answer.data.toString();
      return E.left(this.unavailable(port, why === '' ? 'refused' : why));
    }
    const conn = new Connection(this, id, port);
    this.conns.set(id, conn);
    return E.right(conn);
  }

  /** Sends the connect and waits for `c` or `r`; or 'timeout', 'aborted', 'closed'. */
  private ask(id: number, port: number, signal: AbortSignal | undefined): Promise<Frame | string> {
    return awaitAnswer<Frame | string>(
      (answer) => {
        this.pending.set(id, { port, answer });
        this.send(encodeFrame('C', id, Buffer.from(String(port))));
      },
      () => this.pending.delete(id),
      CONNECT_MS,
      signal,
    );
  }

  /** Takes a frame of the agent's: true when it was about a connection. */
  dispatch(f: Frame): boolean {
    if (!CONN_TYPES.has(f.type)) return false;
    if (f.type === 'c' || f.type === 'r') this.pending.get(f.run)?.answer(f);
    else this.conns.get(f.run)?.receive(f);
    if (f.type === 'z') this.conns.delete(f.run);
    return true;
  }

  /** The channel is gone (or the run ended): every connection is destroyed, every connect answered, none opens again. */
  close(why: string): void {
    if (this.closed !== undefined) return;
    this.closed = why;
    for (const p of this.pending.values()) p.answer('closed');
    // destroyed as a socket whose peer is gone: 'close' without 'end' (a reader sees it cut short)
    for (const c of [...this.conns.values()]) {
      c.gone = true;
      c.destroy();
    }
    this.conns.clear();
  }

  /** @internal A frame to the agent (nothing once closed). */
  send(frame: Buffer): void {
    if (this.closed === undefined) this.out(frame);
  }

  /** @internal A connection destroyed on lessl's side. */
  forget(id: number): void {
    this.conns.delete(id);
  }

  private unavailable(port: number, why: string): Unavailable {
    return unavailable(this.task, `port ${port} of task ${this.task} cannot be reached: ${why}`);
  }
}
