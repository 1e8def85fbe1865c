/**
 * Per-key readers-writer lock: operations that change an element take it exclusively; operations
 * that only use an element (an image as a root filesystem, a read-only mount, a parent) share it.
 * Locks guard registry transitions only, never a running task (docs/lifecycle.md).
 */
type Mode = 'shared' | 'exclusive';

interface Waiter {
  readonly mode: Mode;
  readonly grant: () => void;
}

interface KeyState {
  readers: number;
  writer: boolean;
  readonly queue: Waiter[];
}

/** Keyed readers-writer lock, FIFO per key (a waiting writer holds back later readers). */
export class KeyedLock {
  private readonly keys = new Map<string, KeyState>();

  /**
   * Runs `fn` holding `keys` exclusively and `shared` shared (a key in both is exclusive).
   * Keys are taken in sorted order, so two holders never deadlock.
   */
  async with<A>(keys: readonly string[], fn: () => Promise<A>, shared: readonly string[] = []): Promise<A> {
    const modes = new Map<string, Mode>();
    for (const k of shared) modes.set(k, 'shared');
    for (const k of keys) modes.set(k, 'exclusive');
    const order = [...modes.keys()].sort();
    const held: [string, Mode][] = [];
    try {
      for (const k of order) {
        const m = modes.get(k) ?? 'exclusive';
        await this.acquire(k, m);
        held.push([k, m]);
      }
      return await fn();
    } finally {
      for (const [k, m] of held.reverse()) this.release(k, m);
    }
  }

  /**
   * Runs `fn` holding `keys` exclusively only when every key is free right now; otherwise runs
   * nothing and answers `undefined`. Never waits, so it never holds back holders or waiters
   * (for background bookkeeping that can be retried later).
   */
  async tryWith<A>(keys: readonly string[], fn: () => Promise<A>): Promise<A | undefined> {
    const order = [...new Set(keys)].sort();
    if (!order.every((k) => this.keys.get(k) === undefined)) return undefined;
    for (const k of order) this.state(k).writer = true;
    try {
      return await fn();
    } finally {
      for (const k of order.reverse()) this.release(k, 'exclusive');
    }
  }

  private state(key: string): KeyState {
    let s = this.keys.get(key);
    if (s === undefined) this.keys.set(key, (s = { readers: 0, writer: false, queue: [] }));
    return s;
  }

  private acquire(key: string, mode: Mode): Promise<void> {
    const s = this.state(key);
    const free = mode === 'shared' ? !s.writer && s.queue.length === 0 : !s.writer && s.readers === 0 && s.queue.length === 0;
    if (free) {
      if (mode === 'shared') s.readers++;
      else s.writer = true;
      return Promise.resolve();
    }
    return new Promise((grant) => s.queue.push({ mode, grant }));
  }

  private release(key: string, mode: Mode): void {
    const s = this.keys.get(key);
    if (s === undefined) return;
    if (mode === 'shared') s.readers--;
    else s.writer = false;
    while (s.queue.length > 0 && !s.writer) {
      const next = s.queue[0];
      if (next === undefined) break;
      if (next.mode === 'exclusive') {
        if (s.readers > 0) break;
        s.queue.shift();
        s.writer = true;
        next.grant();
        break;
      }
      s.queue.shift();
      s.readers++;
      next.grant();
    }
    if (!s.writer && s.readers === 0 && s.queue.length === 0) this.keys.delete(key);
  }
}
