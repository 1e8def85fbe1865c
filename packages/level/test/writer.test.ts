/**
 * No write can wedge the registry: a failure at each step of a flush, or a
 * value that cannot be serialised, answers the call it belongs to (or none, once the change is
 * durable); later writes go through and `close()` returns.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { Level } from 'level';
import { describe, expect, test } from 'vitest';
import { within } from '@lessl/conformance';
import { parseId, type Element, type LesslEvent } from '@lessl/core';
import {
  assemble,
  Registry,
  RegistryWriteError,
  specOnlyTaskDriver,
  type Change,
  type ElementDriver,
  type ExecutorDriver,
  type FlushStep,
  type StringLevel,
} from '@lessl/level';

const el = (key: string, attributes: Record<string, unknown> = {}): Element => {
  const id = parseId(key);
  if (E.isLeft(id)) throw new Error(key);
  return { id: id.right, ro: {}, rw: {}, revision: 1, created: 't', modified: 't', attributes };
};
const created = (key: string, detail: Record<string, unknown> = {}): Change => ({
  put: [el(key)],
  events: [{ type: 'created', id: key, revision: 1, detail }],
});
const dir = (): string => mkdtempSync(join(tmpdir(), 'lessl-writer-'));

/** A real on-disk level database whose next `batch` call fails, synchronously or not. */
const flakyDisk = (location: string): { db: StringLevel; failNext: (how: 'throw' | 'reject') => void } => {
  const db = new Level<string, string>(location, { valueEncoding: 'utf8' }) as unknown as StringLevel;
  const batch = db.batch.bind(db) as (...a: unknown[]) => Promise<void>;
  let fail: 'throw' | 'reject' | undefined;
  (db as unknown as { batch: (...a: unknown[]) => Promise<void> }).batch = (...a: unknown[]) => {
    const how = fail;
    fail = undefined;
    if (how === 'throw') throw new Error('disk gone (sync)');
    if (how === 'reject') return Promise.reject(new Error('disk full'));
    return batch(...a);
  };
  return { db, failNext: (how) => (fail = how) };
};

/** Makes the next `step` of a write fail, through the registry's internal test seam. */
const failOnce = (r: Registry, step: FlushStep): void => {
  let armed = true;
  r.flushHook = (s) => {
    if (s === step && armed) {
      armed = false;
      throw new Error(`injected ${step} failure`);
    }
  };
};

/** Records what a healthy subscriber sees. */
const watch = (r: Registry): LesslEvent[] => {
  const seen: LesslEvent[] = [];
  r.events.subscribe({}, (e) => seen.push(e));
  return seen;
};

/** After a fault: a later write goes through, is seen by subscribers, and close returns. */
const stillWorks = async (r: Registry, seen: LesslEvent[], key: string): Promise<void> => {
  const [e] = await within(r.commit(created(key)), 'a later write');
  expect(r.get(key)?.id.key).toBe(key);
  expect(seen.at(-1)).toEqual(e);
  await within(r.close(), 'close()');
};

describe('a failure at each step of a flush', () => {
  // Before the batch is durable: the call fails with a RegistryWriteError and nothing changed.
  for (const step of ['serialise', 'build', 'batch'] as const satisfies readonly FlushStep[])
    test(`${step}: the failing call is rejected, nothing is written, later writes and close() work`, async () => {
      const location = dir();
      const r = await Registry.open({ location });
      const seen = watch(r);
      failOnce(r, step);
      const err = await within(r.commit(created('task://local/a')), 'the failing write').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryWriteError);
      expect(r.get('task://local/a')).toBeUndefined();
      expect(seen).toEqual([]);
      expect(r.lastSeq()).toBe(0);
      await stillWorks(r, seen, 'task://local/b');
      const again = await Registry.open({ location });
      expect(again.get('task://local/a')).toBeUndefined();
      expect((await again.readEvents(1, 10, 10)).map((e) => [e.seq, e.id.key])).toEqual([[1, 'task://local/b']]);
      await again.close();
    });

  test('batch: the level database throwing or rejecting fails that group only', async () => {
    const location = dir();
    const disk = flakyDisk(location);
    const r = await Registry.open({ db: disk.db });
    const seen = watch(r);
    for (const how of ['throw', 'reject'] as const) {
      disk.failNext(how);
      const err = await within(r.commit(created(`task://local/${how}`)), 'the failing write').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RegistryWriteError);
      expect((err as RegistryWriteError).reason).toBe('batch');
      expect(r.get(`task://local/${how}`)).toBeUndefined();
    }
    await stillWorks(r, seen, 'task://local/ok');
    expect(seen.map((e) => e.seq)).toEqual([1]);
  });

  // After the batch is durable: the call resolves (its change happened), the index is repaired
  // from the database, streams and later subscribers are not affected.
  for (const step of ['index', 'publish', 'resolve'] as const satisfies readonly FlushStep[])
    test(`${step}: the durable change stands, the call resolves, later writes and close() work`, async () => {
      const location = dir();
      const r = await Registry.open({ location });
      const seen = watch(r);
      failOnce(r, step);
      const [e] = await within(r.commit(created('task://local/a')), 'the write');
      expect(e?.seq).toBe(1);
      expect(r.get('task://local/a')?.revision).toBe(1);
      expect(r.faults).toBe(1);
      expect(r.events.lastSeq()).toBe(1);
      expect((await r.readEvents(1, 1, 10)).map((x) => x.id.key)).toEqual(['task://local/a']);
      // a stream opened now starts after the durable event, whether or not it was published live
      const stream = r.events.stream({});
      await stillWorks(r, seen, 'task://local/b');
      expect((await stream.next()).value?.id.key).toBe('task://local/b');
      stream.close();
    });

  test('subscriber callbacks: throwing handlers and stream listeners reach neither the writer nor other subscribers', async () => {
    const r = await Registry.open({ memory: true });
    r.events.subscribe({}, () => {
      throw new Error('bad subscriber');
    });
    r.events.listen(() => {
      throw new Error('bad listener');
    });
    // an async handler's rejection is caught too (the suite fails on any unhandled rejection)
    r.events.subscribe({}, (async () => {
      throw new Error('bad async subscriber');
    }) as () => void);
    const seen = watch(r);
    const stream = r.events.stream({});
    const [e] = await within(r.commit(created('task://local/a')), 'the write');
    expect(seen).toEqual([e]);
    expect((await stream.next()).value).toEqual(e);
    expect(r.events.handlerErrors).toBe(3);
    stream.close();
    await stillWorks(r, seen, 'task://local/b');
  });

  test('a group with a failing batch rejects every call in it, and the next group is written', async () => {
    const disk = flakyDisk(dir());
    const r = await Registry.open({ db: disk.db });
    await r.commit(created('task://local/first'));
    disk.failNext('reject');
    // queued together while nothing is in flight: one group
    const all = await within(
      Promise.allSettled([r.commit(created('task://local/x')), r.commit(created('task://local/y'))]),
      'the group',
    );
    expect(all.map((s) => s.status)).toEqual(['rejected', 'rejected']);
    const later = await within(
      Promise.all([r.commit(created('task://local/p')), r.commit(created('task://local/q'))]),
      'the next group',
    );
    expect(later.map((evs) => evs[0]?.seq)).toEqual([2, 3]);
    await within(r.close(), 'close()');
  });
});

describe('values that cannot be serialised', () => {
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  const revoked = Proxy.revocable({}, {});
  revoked.revoke();
  const hostile: Record<string, unknown> = {
    BigInt: 10n,
    cycle,
    'throwing getter': Object.defineProperty({}, 'x', {
      enumerable: true,
      get: () => {
        throw new Error('boom');
      },
    }),
    'throwing Proxy': new Proxy(
      {},
      {
        ownKeys: () => {
          throw new Error('trap');
        },
      },
    ),
    'revoked Proxy': revoked.proxy,
  };
  const places: Record<string, (v: unknown) => Change> = {
    'element attributes': (v) => ({ put: [el('task://local/bad', { v })] }),
    'event detail': (v) => ({ events: [{ type: 'created', id: 'task://local/bad', revision: 1, detail: { v } }] }),
    'composition options': (v) => ({
      putComposition: [{ executor: 'executor://local/bad', options: { backend: { v } }, members: [] }],
    }),
    'intent detail': (v) => ({ putIntent: [{ id: 'image://local/bad', started: 't', detail: { v } }] }),
  };
  for (const [what, value] of Object.entries(hostile))
    test(`${what}: rejects that call alone, at once, in every part of a change`, async () => {
      const r = await Registry.open({ memory: true });
      const seen = watch(r);
      for (const [where, change] of Object.entries(places)) {
        const good = r.commit(created(`task://local/${where.replace(/ /g, '-')}`));
        const err = await within(r.commit(change(value)), `${what} in ${where}`).catch((e: unknown) => e);
        expect(err, `${what} in ${where}`).toBeInstanceOf(RegistryWriteError);
        expect((err as RegistryWriteError).reason).toBe('serialise');
        await within(good, 'a concurrent good write');
      }
      expect(r.get('task://local/bad')).toBeUndefined();
      expect(r.composition('executor://local/bad')).toBeUndefined();
      expect(seen.map((e) => e.seq)).toEqual([1, 2, 3, 4]);
      await stillWorks(r, seen, 'task://local/after');
    });

  test('the index and the events hold what is durable, never the objects passed in', async () => {
    const r = await Registry.open({ memory: true });
    const attributes: Record<string, unknown> = { n: 1, gone: undefined, f: () => 1 };
    const detail: Record<string, unknown> = { n: 1 };
    const [e] = await r.commit({
      put: [el('task://local/a', attributes)],
      events: [{ type: 'x', id: 'a', revision: 1, detail }],
    });
    attributes.n = 2;
    detail.n = 2;
    expect(r.get('task://local/a')?.attributes).toStrictEqual({ n: 1 });
    expect(e?.detail).toStrictEqual({ n: 1 });
    expect(await r.readEvents(1, 1, 1)).toEqual([e]);
    await r.close();
  });
});

describe('through a backend (assemble)', () => {
  const exec = (attributes: () => Record<string, unknown>): ExecutorDriver => ({
    commit: async () => E.right({ results: [], attributes: attributes() }),
    undo: async () => undefined,
    destroy: async () => E.right(undefined),
  });
  const open = async (image: ElementDriver, executor: ExecutorDriver) => {
    const registry = await Registry.open({ memory: true });
    const b = await assemble({
      registry,
      stores: [
        { kind: 'image', name: 'local' },
        { kind: 'volume', name: 'local' },
        { kind: 'task', name: 'local' },
        { kind: 'executor', name: 'local' },
      ],
      drivers: { image, volume: image, task: specOnlyTaskDriver },
      executor,
    });
    if (E.isLeft(b)) throw new Error(b.left.message);
    return b.right;
  };

  test('a driver answering attributes that cannot be serialised: RuntimeError for that call; later calls and close() work', async () => {
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    let bad = true;
    const image: ElementDriver = {
      external: false,
      supportsData: false,
      create: async () => E.right({ attributes: bad ? { size: 1n } : { size: 1 } }),
      destroy: async () => E.right(undefined),
    };
    const b = await open(
      image,
      exec(() => (bad ? { cycle } : {})),
    );
    const made = await within(b.stores.image.create({ id: 'image://local/a' })(), 'create');
    expect(E.isLeft(made) && made.left._tag).toBe('RuntimeError');
    const h = await b.composer.handle('executor://local/x')();
    if (E.isLeft(h)) throw new Error(h.left.message);
    const c = await within(b.composer.commit(h.right)(), 'commit');
    expect(E.isRight(c) && !c.right.committed && c.right.error._tag).toBe('RuntimeError');
    bad = false;
    expect(E.isRight(await within(b.stores.image.create({ id: 'image://local/a' })(), 'a later create'))).toBe(true);
    const again = await within(b.composer.commit(h.right)(), 'a later commit');
    expect(E.isRight(again) && again.right.committed).toBe(true);
    await within(b.close(), 'close()');
  });
});
