/**
 * Event cases: total order, durability before publication, filters, handler isolation,
 * replay with `since` and no gap/duplicate, bounded queues and overflow policies.
 */
import { LesslError, type LesslEvent } from '@lessl/core';
import { assert, b, ok, uniq } from './harness.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

/** The next event of a stream; fails when the stream has ended. */
const nextEvent = async (it: AsyncIterator<LesslEvent>): Promise<LesslEvent> => {
  const r = await it.next();
  return r.done === true ? assert.fail('the stream ended early') : r.value;
};

export const eventCases = (o: SuiteOptions): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const cases: Case[] = [];
  const add = (name: string, fn: (l: TestBackend) => Promise<void>): void => {
    cases.push({ name, fn });
  };
  const task = (): string => `task://local/${uniq('ev')}`;

  add('events: one total order: seq increases by one; lastSeq follows', async (l) => {
    const seen: LesslEvent[] = [];
    const off = l.events.subscribe({}, (e) => seen.push(e));
    const start = l.events.lastSeq();
    await Promise.all([1, 2, 3, 4, 5, 6].map(() => ok(l.stores.task.create({ id: task(), spec }))));
    off();
    assert.equal(seen.length, 6);
    seen.forEach((e, i) => assert.equal(e.seq, start + i + 1));
    assert.equal(l.events.lastSeq(), start + 6);
    for (const e of seen) assert.ok(!Number.isNaN(Date.parse(e.time)));
  });
  add('events: published only after the change is durable and visible', async (l) => {
    const id = task();
    const checks: Promise<boolean>[] = [];
    const off = l.events.subscribe({ ids: [id] }, () => {
      checks.push(
        l.stores.task
          .read(id)()
          .then((r) => r._tag === 'Right'),
      );
    });
    await ok(l.stores.task.create({ id, spec }));
    off();
    assert.equal(checks.length, 1);
    assert.equal(await checks[0], true);
  });
  add('events: filters by type, kind, id and store', async (l) => {
    const id = task();
    const byType: LesslEvent[] = [];
    const byId: LesslEvent[] = [];
    const byKind: LesslEvent[] = [];
    const byStore: LesslEvent[] = [];
    const offs = [
      l.events.subscribe({ types: ['modified'] }, (e) => byType.push(e)),
      l.events.subscribe({ ids: [id] }, (e) => byId.push(e)),
      l.events.subscribe({ kinds: ['image'] }, (e) => byKind.push(e)),
      l.events.subscribe({ stores: ['nowhere'] }, (e) => byStore.push(e)),
    ];
    await ok(l.stores.task.create({ id, spec }));
    await ok(l.stores.task.create({ id: task(), spec }));
    await ok(l.stores.task.update(id, { a: b('1') }));
    offs.forEach((f) => f());
    assert.deepEqual(
      byType.map((e) => e.id.key),
      [id],
    );
    assert.deepEqual(
      byId.map((e) => e.type),
      ['created', 'modified'],
    );
    assert.equal(byKind.length, 0);
    assert.equal(byStore.length, 0);
  });
  add('events: a throwing handler does not stop the others or the operation', async (l) => {
    const got: string[] = [];
    const offs = [
      l.events.subscribe({}, () => got.push('a')),
      l.events.subscribe({}, () => {
        throw new Error('bad subscriber');
      }),
      l.events.subscribe({}, () => got.push('c')),
    ];
    await ok(l.stores.task.create({ id: task(), spec }));
    offs.forEach((f) => f());
    assert.deepEqual(got, ['a', 'c']);
  });
  add('events: failed operations publish nothing', async (l) => {
    const seen: LesslEvent[] = [];
    const off = l.events.subscribe({}, (e) => seen.push(e));
    const id = task();
    await l.stores.task.create({ id, spec: { cmd: [] } })();
    await l.stores.task.update(id, { a: b('1') })();
    await l.stores.task.delete(id)();
    off();
    assert.equal(seen.length, 0);
  });
  add('events: stream with since replays then goes live with no gap and no duplicate', async (l) => {
    const since = l.events.lastSeq();
    for (let i = 0; i < 20; i++) await ok(l.stores.task.create({ id: task(), spec }));
    const st = l.events.stream({}, { since, highWaterMark: 8 });
    const got: number[] = [];
    const producer = (async () => {
      for (let i = 0; i < 20; i++) await ok(l.stores.task.create({ id: task(), spec }));
    })();
    for await (const e of st) {
      got.push(e.seq);
      if (got.length === 40) break;
    }
    await producer;
    assert.deepEqual(
      got,
      Array.from({ length: 40 }, (_, i) => since + i + 1),
    );
  });
  add('events: stream without since starts live; filter applies', async (l) => {
    await ok(l.stores.task.create({ id: task(), spec }));
    const id = task();
    const st = l.events.stream({ ids: [id] });
    await ok(l.stores.task.create({ id: task(), spec }));
    await ok(l.stores.task.create({ id, spec }));
    await ok(l.stores.task.delete(id));
    const types: string[] = [];
    for await (const e of st) {
      types.push(e.type);
      if (types.length === 2) break;
    }
    assert.deepEqual(types, ['created', 'deleted']);
  });
  add('events: overflow "error" ends the stream with a LesslError; "drop-oldest" counts drops', async (l) => {
    const strict = l.events.stream({}, { highWaterMark: 2, overflow: 'error' });
    const lossy = l.events.stream({}, { highWaterMark: 2, overflow: 'drop-oldest' });
    for (let i = 0; i < 5; i++) await ok(l.stores.task.create({ id: task(), spec }));
    const it = strict[Symbol.asyncIterator]();
    assert.equal((await it.next()).done, false);
    assert.equal((await it.next()).done, false);
    await assert.rejects(it.next(), (e: unknown) => e instanceof LesslError && e.tag === 'RuntimeError');
    assert.equal(lossy.dropped, 3);
    const kept: number[] = [];
    const li = lossy[Symbol.asyncIterator]();
    kept.push((await nextEvent(li)).seq, (await nextEvent(li)).seq);
    assert.equal(kept[1], l.events.lastSeq());
    lossy.close();
    assert.equal((await li.next()).done, true);
  });
  add('events: bad stream options reject with InvalidEntry; an abort signal ends the stream', async (l) => {
    const bad = l.events.stream({}, { since: -1 });
    await assert.rejects(bad[Symbol.asyncIterator]().next(), (e: unknown) => e instanceof LesslError && e.tag === 'InvalidEntry');
    const ac = new AbortController();
    const st = l.events.stream({}, { signal: ac.signal });
    const next = st[Symbol.asyncIterator]().next();
    ac.abort();
    assert.equal((await next).done, true);
  });
  return cases;
};
