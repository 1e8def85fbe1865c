/**
 * Docker's multiplexed stdout/stderr stream, demultiplexed in arrival order, capped.
 */
import type { Readable } from 'node:stream';
import type { TaskResult } from '@lessl/core';

/** A chunk of task output. */
export interface OutputChunk {
  readonly stream: 'stdout' | 'stderr';
  readonly data: Uint8Array;
}

/** Collects frames `[type, 0, 0, 0, size(BE32)] payload` until the stream ends. */
export class Demux {
  private buf: Buffer = Buffer.alloc(0);
  private bytes = 0;
  readonly chunks: OutputChunk[] = [];
  truncated = false;

  constructor(
    private readonly cap: number,
    private readonly onChunk?: (c: OutputChunk) => void,
  ) {}

  push(data: Buffer): void {
    this.buf = this.buf.length === 0 ? data : Buffer.concat([this.buf, data]);
    while (this.buf.length >= 8) {
      const size = this.buf.readUInt32BE(4);
      if (this.buf.length < 8 + size) break;
      const type = this.buf[0];
      const payload = this.buf.subarray(8, 8 + size);
      this.buf = this.buf.subarray(8 + size);
      if (type !== 1 && type !== 2) continue;
      const chunk: OutputChunk = { stream: type === 2 ? 'stderr' : 'stdout', data: new Uint8Array(payload) };
      this.onChunk?.(chunk);
      const room = this.cap - this.bytes;
      if (room <= 0) {
        this.truncated = true;
        continue;
      }
      const kept = chunk.data.byteLength > room ? { ...chunk, data: chunk.data.slice(0, room) } : chunk;
      if (kept !== chunk) this.truncated = true;
      this.bytes += kept.data.byteLength;
      this.chunks.push(kept);
    }
  }

  /** Resolves once the stream has ended (all output flushed). */
  drain(stream: Readable): Promise<void> {
    return new Promise((resolve) => {
      stream.on('data', (d: Buffer) => this.push(d));
      stream.on('end', () => resolve());
      stream.on('close', () => resolve());
      stream.on('error', () => resolve());
    });
  }

  /** The task result, given how it ended. */
  result(exitCode: number | null, reason: TaskResult['reason']): TaskResult {
    // No status code says "command not found": the init (tini) or the OCI runtime reports it
    // on stderr with exit 126/127.
    if ((exitCode === 127 || exitCode === 126) && reason === 'exited') {
      const err = Buffer.concat(this.chunks.filter((c) => c.stream === 'stderr').map((c) => c.data)).toString();
      if (/exec.*(failed|not found)|no such file or directory|executable file not found/i.test(err)) reason = 'not-found';
    }
    const pick = (s: 'stdout' | 'stderr'): Uint8Array =>
      Buffer.concat(this.chunks.filter((c) => c.stream === s).map((c) => c.data));
    return { exitCode, stdout: pick('stdout'), stderr: pick('stderr'), output: this.chunks, truncated: this.truncated, reason };
  }
}
