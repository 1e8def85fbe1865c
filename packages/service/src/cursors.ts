/**
 * Event ids of `GET /v1/events`: the lessl event sequence is global, so sending it would tell a
 * user how busy everyone else is. Each user gets opaque ids instead: the seq encrypted as one AES
 * block under a key derived for that user from a service secret. The same event has a different
 * id for every user, ids neither count nor compare, and only the user they were made for can
 * resume from one (`Last-Event-ID`, `?since=`).
 */
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Encodes and decodes the event ids of each user. */
export class EventCursors {
  private readonly keys = new Map<string, Buffer>();

  /** `secret`: 32 bytes or more, kept across restarts (ids stay valid for resumption). */
  constructor(private readonly secret: Buffer) {}

  private keyOf(user: string): Buffer {
    let k = this.keys.get(user);
    if (k === undefined) {
      k = createHmac('sha256', this.secret).update(`lessl-events\0${user}`).digest();
      this.keys.set(user, k);
    }
    return k;
  }

  /** The id `user` sees for the event of sequence `seq` (22 characters, base64url). */
  encode(user: string, seq: number): string {
    const block = Buffer.alloc(16); // the seq, then zeros that a decode checks
    block.writeBigUInt64BE(BigInt(seq));
    const c = createCipheriv('aes-256-ecb', this.keyOf(user), null).setAutoPadding(false);
    return Buffer.concat([c.update(block), c.final()]).toString('base64url');
  }

  /** The seq behind an id `user` was given, or undefined (not an id, or another user's). */
  decode(user: string, id: string): number | undefined {
    if (!/^[A-Za-z0-9_-]{22}$/.test(id)) return undefined;
    const d = createDecipheriv('aes-256-ecb', this.keyOf(user), null).setAutoPadding(false);
    const block = Buffer.concat([d.update(Buffer.from(id, 'base64url')), d.final()]);
    const seq = block.readBigUInt64BE(0);
    return block.readBigUInt64BE(8) === 0n && seq <= SAFE ? Number(seq) : undefined;
  }
}
