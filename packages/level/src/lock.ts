/** Per-key async mutex: operations on the same element run one at a time. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `fn` once every earlier holder of all `keys` is done. Keys are taken in sorted order. */
  async with<A>(keys: readonly string[], fn: () => Promise<A>): Promise<A> {
    const sorted = keys.length === 1 ? keys : [...new Set(keys)].sort();
    const releases: (() => void)[] = [];
    for (const k of sorted) releases.push(await this.acquire(k));
    try {
      return await fn();
    } finally {
      for (const r of releases.reverse()) r();
    }
  }

  private async acquire(key: string): Promise<() => void> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((res) => (release = res));
    const tail = prev.then(() => mine);
    this.tails.set(key, tail);
    await prev;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
