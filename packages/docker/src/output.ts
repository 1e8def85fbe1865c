/**
 * Docker's multiplexed stdout/stderr stream (`[type, 0, 0, 0, size(BE32)] payload` frames),
 * demultiplexed in arrival order and handed on as it comes.
 */
import { Readable } from 'node:stream';

/** Where demultiplexed output goes. */
export type OutputSink = (stream: 'stdout' | 'stderr', data: Uint8Array) => void;

/** Bytes of stderr kept to recognise "command not found" (no status code says it). */
const STDERR_HEAD = 4096;

/** Demultiplexes frames until the stream ends. */
export class Demux {
  private buf: Buffer = Buffer.alloc(0);
  private skip: number;
  /** The first bytes of stderr. */
  private errHead = '';

  /** `skip`: payload bytes to drop first (output already kept, when following again after a restart). */
  constructor(
    private readonly sink: OutputSink,
    skip = 0,
  ) {
    this.skip = skip;
  }

  push(data: Buffer): void {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    while (this.buf.length >= 8) {
      const size = this.buf.readUInt32BE(4);
      if (this.buf.length < 8 + size) break;
      const type = this.buf[0];
      let payload = this.buf.subarray(8, 8 + size);
      this.buf = this.buf.subarray(8 + size);
      if (type !== 1 && type !== 2) continue;
      const stream = type === 2 ? 'stderr' : 'stdout';
      if (stream === 'stderr' && this.errHead.length < STDERR_HEAD)
        this.errHead += payload.subarray(0, STDERR_HEAD - this.errHead.length).toString();
      if (this.skip > 0) {
        const n = Math.min(this.skip, payload.length);
        this.skip -= n;
        payload = payload.subarray(n);
        if (payload.length === 0) continue;
      }
      this.sink(stream, new Uint8Array(payload));
    }
  }

  /** Resolves once the stream has ended (all output handed on). */
  drain(stream: Readable): Promise<void> {
    return new Promise((resolve) => {
      stream.on('data', (d: Buffer) => this.push(d));
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.on('error', () => resolve());
    });
  }

  /**
   * True when exit 126/127 came with the init's or the runtime's "cannot exec" message on
   * stderr: the command does not exist (no status code says so).
   */
  notFound(exitCode: number | null): boolean {
    return (
      (exitCode === 127 || exitCode === 126) &&
      /exec.*(failed|not found)|no such file or directory|executable file not found/i.test(this.errHead)
    );
  }
}

/** Nanoseconds since the epoch of an RFC 3339 timestamp with up to 9 fraction digits. */
const nanosOf = (ts: string): bigint | undefined => {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(ts);
  const ms = m === null ? NaN : Date.parse(`${m[1]}${m[3]}`);
  if (m === null || Number.isNaN(ms)) return undefined;
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
};

/**
 * Docker's log read with `timestamps: true`, across several reads (a container that Docker
 * restarts ends every log stream): each frame's timestamp is stripped and remembered, so the
 * next read starts `since` the last one and nothing is handed on twice. `skip`: bytes already
 * kept (when following again after a restart of the embedding process).
 */
export class StampedLog {
  private cursor = -1n;
  /** Frames seen carrying the cursor's timestamp (`since` is inclusive: a new read repeats them). */
  private atCursor = 0;
  private replay = 0;
  private skip: number;
  readonly demux: Demux;

  constructor(
    private readonly sink: OutputSink,
    skip = 0,
  ) {
    this.skip = skip;
    this.demux = new Demux((s, d) => this.frame(s, d));
  }

  /** The `since` of the next read (seconds.nanoseconds); resets the repeat filter. */
  since(): string {
    this.replay = this.atCursor;
    if (this.cursor < 0n) return '0';
    return `${this.cursor / 1_000_000_000n}.${(this.cursor % 1_000_000_000n).toString().padStart(9, '0')}`;
  }

  private frame(stream: 'stdout' | 'stderr', data: Uint8Array): void {
    const sp = data.indexOf(0x20);
    const ns = sp < 0 ? undefined : nanosOf(Buffer.from(data.subarray(0, sp)).toString());
    if (ns === undefined || ns < this.cursor) return;
    if (ns === this.cursor && this.replay > 0) {
      this.replay--;
      return;
    }
    if (ns === this.cursor) this.atCursor++;
    else {
      this.cursor = ns;
      this.atCursor = 1;
    }
    let payload = data.subarray(sp + 1);
    if (this.skip > 0) {
      const n = Math.min(this.skip, payload.length);
      this.skip -= n;
      payload = payload.subarray(n);
      if (payload.length === 0) return;
    }
    this.sink(stream, payload);
  }
}

/**
 * A Node readable of what dockerode answers for a log, an attach or an exec: the stream itself
 * (a socket or a response, which are `Readable`s), or a readable of the one buffer it answers
 * for a log read without `follow`.
 */
export const readableOf = (got: NodeJS.ReadableStream | Buffer): Readable => {
  if (Buffer.isBuffer(got)) return Readable.from([got]);
  return got instanceof Readable ? got : Readable.from(got);
};
