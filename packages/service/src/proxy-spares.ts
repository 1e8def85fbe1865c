/**
 * Spare connections of the proxy: after a request to a task port takes a connection into the
 * task, the proxy opens the next one ahead (at most one idle spare per task and port), so the next
 * request skips the connect (through the agent: a round trip, and a daemon such as busybox httpd
 * forks its child at accept). A spare is closed after an idle time, when the daemon speaks or closes
 * it while idle (an HTTP server sends nothing before a request: a byte or an end means it gave up on
 * the connection), when its task ends (the backend closes its connections) and when the service
 * closes. A spare found dead is never used: the request opens a fresh connection instead.
 */
import type { Duplex } from 'node:stream';

/** The idle spare of a task port. */
interface Spare {
  readonly conn: Duplex;
  readonly timer: NodeJS.Timeout;
  readonly discard: () => void;
}

/** Opens a connection into a task port for a spare, or answers undefined when it cannot. */
export type OpenSpare = () => Promise<Duplex | undefined>;

/** True while `conn` may still carry a request: open both ways, nothing received yet. */
const unused = (conn: Duplex): boolean =>
  !conn.destroyed && !conn.readableEnded && !conn.writableEnded && conn.readableLength === 0;

/** The idle spares, one per task port at most (see the module comment). */
export class Spares {
  private readonly idle = new Map<string, Spare>();
  private readonly opening = new Set<string>();
  private closed = false;

  /** @param idleMs how long a spare may stay idle (0: no spares) */
  constructor(private readonly idleMs: number) {}

  /** Idle spares now. */
  get size(): number {
    return this.idle.size;
  }

  /** Takes the spare of `key` when it is still unused (a dead one is closed), else undefined. */
  take(key: string): Duplex | undefined {
    const s = this.idle.get(key);
    if (s === undefined) return undefined;
    this.release(key, s);
    if (unused(s.conn)) return s.conn;
    s.conn.destroy();
    return undefined;
  }

  /** Opens a spare for `key` with `open`, unless spares are off or one is there or on its way. */
  refill(key: string, open: OpenSpare): void {
    if (this.idleMs <= 0 || this.closed || this.idle.has(key) || this.opening.has(key)) return;
    this.opening.add(key);
    void open().then(
      (conn) => {
        this.opening.delete(key);
        if (conn === undefined) return;
        if (this.closed || this.idle.has(key) || !unused(conn)) conn.destroy();
        else this.keep(key, conn);
      },
      () => this.opening.delete(key),
    );
  }

  /** Closes every spare; none opens again (the service is closing). */
  close(): void {
    this.closed = true;
    for (const [key, s] of [...this.idle]) {
      this.release(key, s);
      s.conn.destroy();
    }
  }

  /** Keeps `conn` idle as the spare of `key`, watched until it is taken. */
  private keep(key: string, conn: Duplex): void {
    const discard = (): void => {
      const s = this.idle.get(key);
      if (s?.conn === conn) this.release(key, s);
      conn.destroy();
    };
    const timer = setTimeout(discard, this.idleMs);
    timer.unref();
    // 'readable' fires for the first byte and for the end: a daemon that speaks or closes unasked
    for (const ev of ['readable', 'close', 'error', 'finish']) conn.on(ev, discard);
    this.idle.set(key, { conn, timer, discard });
  }

  /** Forgets the spare `s` of `key`: its timer and watchers go. */
  private release(key: string, s: Spare): void {
    this.idle.delete(key);
    clearTimeout(s.timer);
    for (const ev of ['readable', 'close', 'error', 'finish']) s.conn.off(ev, s.discard);
  }
}
