/**
 * The janitor: Docker objects lessl made and must remove but could not (the engine failed, timed
 * out or was gone), retried in the background with backoff until they are gone, and at once when
 * the engine answers again (the event watcher reconnecting calls `kick`). Whatever is still
 * pending when the backend closes carries lessl's labels, so reconciliation finds it on the next
 * open.
 */
import { noopLogger, type Logger } from '@lessl/core';
import type { Clients } from './client/index.js';
import { statusOf } from './errors.js';

/** A Docker object to remove. */
export interface Leftover {
  readonly kind: 'container' | 'image' | 'volume';
  /** Its Docker ID or name. */
  readonly ref: string;
}

/** How one removal went: `gone` (removed, or not there), or `failed` (try again later). */
export type Removal = 'gone' | 'failed';

const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 30_000;

/** Retries removals until they succeed (see the module comment). */
export class Janitor {
  private readonly pending = new Map<string, Leftover>();
  private timer: NodeJS.Timeout | undefined;
  private delay = FIRST_DELAY_MS;
  private sweeping: Promise<void> | undefined;
  private stopped = false;

  /** `clients` are the host's (its removals go through them); `log` answers where retries and removals are reported. */
  constructor(
    private readonly clients: Pick<Clients, 'containers' | 'images' | 'volumes'>,
    private readonly log: () => Logger = () => noopLogger,
  ) {}

  /**
   * Removes a Docker object lessl made (forced; an object already gone counts as removed). When
   * the engine fails, it is retried in the background. Resolves to whether it is gone now.
   */
  async remove(l: Leftover): Promise<boolean> {
    const r = await this.attempt(l);
    if (r === 'failed') this.add(l);
    return r === 'gone';
  }

  /** One removal attempt; never throws. */
  private async attempt(l: Leftover): Promise<Removal> {
    try {
      if (l.kind === 'container') await this.clients.containers.remove(l.ref, { force: true, volumes: false });
      else if (l.kind === 'image') await this.clients.images.remove(l.ref, { force: true });
      else await this.clients.volumes.remove(l.ref, { force: true });
      return 'gone';
    } catch (err) {
      return statusOf(err) === 404 ? 'gone' : 'failed';
    }
  }

  /** Adds an object whose removal failed; it is retried after a backoff. */
  add(l: Leftover): void {
    if (this.stopped) return;
    this.log().warn({ kind: l.kind, ref: l.ref, retryInMs: this.delay }, 'janitor: a removal failed; retrying');
    this.pending.set(`${l.kind}:${l.ref}`, l);
    this.schedule();
  }

  /** Whether `ref` waits for removal. */
  has(kind: Leftover['kind'], ref: string): boolean {
    return this.pending.has(`${kind}:${ref}`);
  }

  /** What waits for removal. */
  list(): Leftover[] {
    return [...this.pending.values()];
  }

  /** Retries everything now (the engine answers again); resolves when the attempt is over. */
  kick(): Promise<void> {
    if (this.pending.size === 0) return Promise.resolve();
    this.delay = FIRST_DELAY_MS;
    return this.sweep();
  }

  /** Stops retrying (the backend closes); waits for an attempt in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.sweeping;
  }

  private schedule(): void {
    if (this.timer !== undefined || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.sweep();
    }, this.delay);
    // a background retry must not keep the embedding process alive
    this.timer.unref();
  }

  private sweep(): Promise<void> {
    this.sweeping ??= (async () => {
      for (const [key, l] of [...this.pending]) {
        if (this.stopped) break;
        const r = await this.attempt(l);
        if (r === 'gone') {
          this.pending.delete(key);
          this.log().info({ kind: l.kind, ref: l.ref }, 'janitor: removed on retry');
        }
      }
      this.sweeping = undefined;
      if (this.pending.size > 0) {
        this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
        this.log().warn({ pending: this.pending.size, retryInMs: this.delay }, 'janitor: removals still failing; retrying');
        this.schedule();
      } else this.delay = FIRST_DELAY_MS;
    })();
    return this.sweeping;
  }
}
