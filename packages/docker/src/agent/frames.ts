/**
 * The agent's protocol (packages/docker/agent/README.md): frames of type (1 byte), run (u32
 * big-endian), length (u32 big-endian) and payload, both ways over one byte stream.
 */

/**
 * Frames lessl sends: run, stdin bytes, stdin end, kill, ping; for connections (the frame's run
 * field is the connection's id): connect, data, finish, close, window (bytes taken).
 */
export type InFrameType = 'R' | 'I' | 'E' | 'K' | 'P' | 'C' | 'D' | 'F' | 'Z' | 'W';
/**
 * Frames the agent sends: started, stdout, stderr, stdin taken, exit, pong; for connections:
 * connected, refused, data, finished, closed, written.
 */
export type OutFrameType = 'S' | 'O' | 'e' | 'A' | 'X' | 'P' | 'c' | 'r' | 'd' | 'f' | 'z' | 'w';

/** One decoded frame. */
export interface Frame {
  readonly type: string;
  readonly run: number;
  readonly data: Buffer;
}

/** Largest payload either side sends (the agent refuses bigger ones). */
export const MAX_PAYLOAD = 1 << 20;
const HEADER = 9;

/** Encodes one frame. */
export const encodeFrame = (type: InFrameType, run: number, data: Uint8Array = new Uint8Array(0)): Buffer => {
  const h = Buffer.alloc(HEADER);
  h.write(type, 0, 'latin1');
  h.writeUInt32BE(run, 1);
  h.writeUInt32BE(data.length, 5);
  return data.length === 0 ? h : Buffer.concat([h, data]);
};

/** What a run frame carries: the user and group (numbers or names; empty: root), cwd, argv and env. */
export interface RunFields {
  readonly user: string;
  readonly group: string;
  readonly cwd: string;
  readonly argv: readonly string[];
  /** `KEY=value` entries, set over the agent's own environment (the image's). */
  readonly env: readonly string[];
}

/** Why a run cannot be encoded: a field with a NUL byte, no command, or too big a frame. */
export type RunFieldsError = { readonly field: string; readonly message: string };

/** The payload of a run frame, or what is wrong with the fields. */
export const runPayload = (f: RunFields): { ok: true; payload: Buffer } | { ok: false; error: RunFieldsError } => {
  if (f.argv.length === 0) return { ok: false, error: { field: 'cmd', message: 'the command is empty' } };
  const named: [string, readonly string[]][] = [
    ['user', [f.user, f.group]],
    ['pwd', [f.cwd]],
    ['cmd', f.argv],
    ['env', f.env],
  ];
  for (const [field, values] of named)
    if (values.some((v) => v.includes('\0')))
      return { ok: false, error: { field, message: `${field} holds a NUL byte, which a process cannot be given` } };
  const all = [f.user, f.group, f.cwd, String(f.argv.length), ...f.argv, String(f.env.length), ...f.env];
  const payload = Buffer.from(all.map((s) => `${s}\0`).join(''));
  if (payload.length > MAX_PAYLOAD)
    return {
      ok: false,
      error: { field: 'cmd', message: `the command and env take ${payload.length} bytes, over ${MAX_PAYLOAD}` },
    };
  return { ok: true, payload };
};

/** An exit frame: the exit code (or 128 + the signal) and whether the command does not exist. */
export const exitOf = (data: Buffer): { readonly code: number; readonly notFound: boolean } => ({
  code: data.length >= 4 ? data.readInt32BE(0) : -1,
  notFound: data.length >= 5 && data[4] === 1,
});

/** Decodes frames from a byte stream, in order, across chunk boundaries. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  /** The whole frames `chunk` completes; throws on a frame over `MAX_PAYLOAD` (the stream is not the agent's). */
  push(chunk: Uint8Array): Frame[] {
    this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    const out: Frame[] = [];
    let off = 0;
    while (this.buf.length - off >= HEADER) {
      const len = this.buf.readUInt32BE(off + 5);
      if (len > MAX_PAYLOAD) throw new Error(`agent frame of ${len} bytes, over ${MAX_PAYLOAD}`);
      if (this.buf.length - off < HEADER + len) break;
      out.push({
        type: this.buf.toString('latin1', off, off + 1),
        run: this.buf.readUInt32BE(off + 1),
        data: this.buf.subarray(off + HEADER, off + HEADER + len),
      });
      off += HEADER + len;
    }
    this.buf = this.buf.subarray(off);
    return out;
  }
}

/** Splits `user[:group]` as a task spec gives it. */
export const userFields = (user: string | undefined): { user: string; group: string } => {
  if (user === undefined || user === '') return { user: '', group: '' };
  const i = user.indexOf(':');
  return i < 0 ? { user, group: '' } : { user: user.slice(0, i), group: user.slice(i + 1) };
};
