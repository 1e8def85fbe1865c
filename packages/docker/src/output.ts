/**
 * Docker's multiplexed stdout/stderr stream (`[type, 0, 0, 0, size(BE32)] payload` frames),
 * demultiplexed in arrival order and handed on as it comes.
 */
import type { Readable } from 'node:stream';

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
