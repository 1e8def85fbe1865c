// The per-element lock: background bookkeeping (tryWith) never waits and never holds anyone back.
import { describe, expect, test } from 'vitest';
import { Registry } from '@lessl/level';

describe('KeyedLock.tryWith', () => {
  test('runs at once on free keys, answers undefined on a held key without queueing, so later shared holders are not held back', async () => {
    const reg = await Registry.open({ memory: true });
    const locks = reg.locks;
    expect(await locks.tryWith(['image://local/a'], () => Promise.resolve(1))).toBe(1);
    let release = (): void => undefined;
    const held = locks.with([], () => new Promise<void>((r) => (release = r)), ['image://local/a']);
    await Promise.resolve();
    expect(await locks.tryWith(['image://local/a'], () => Promise.resolve(2))).toBeUndefined();
    // a second shared holder of the same key gets it at once: nothing exclusive waits in front of it
    let second = false;
    await Promise.race([
      locks.with([], () => Promise.resolve((second = true)), ['image://local/a']),
      new Promise((r) => setTimeout(r, 1000)),
    ]);
    expect(second).toBe(true);
    release();
    await held;
    expect(await locks.tryWith(['image://local/a'], () => Promise.resolve(3))).toBe(3);
    await reg.close();
  });
});
