import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { Level } from 'level';
import { isElementId, parseId, taskStatusOf, unwrap, utf8, type Element, type LesslEvent } from '@lessl/core';
import { assemble, Registry, specOnlyTaskDriver, type ElementDriver, type ExecutorDriver } from '@lessl/level';

const el = (key: string, revision = 1): Element => {
  const id = parseId(key);
  if (E.isLeft(id)) throw new Error(key);
  return { id: id.right, ro: utf8({ a: '1' }), rw: {}, revision, created: 't', modified: 't', attributes: {} };
};
const parseIdOrThrow = (key: string) => {
  const id = parseId(key);
  if (E.isLeft(id)) throw new Error(key);
  return id.right;
};
const dir = (): string => mkdtempSync(join(tmpdir(), 'lessl-reg-'));

describe('registry', () => {
  test('a reopened registry has the same records and continues the event sequence', async () => {
    const location = dir();
    const a = await Registry.open({ location });
    await a.commit({ put: [el('task://local/a')], events: [{ type: 'created', id: 'task://local/a', revision: 1, detail: {} }] });
    await a.commit({
      put: [el('task://local/a', 2)],
      events: [{ type: 'modified', id: 'task://local/a', revision: 2, detail: {} }],
    });
    await a.close();
    const b = await Registry.open({ location });
    expect(b.get('task://local/a')?.revision).toBe(2);
    expect(b.lastSeq()).toBe(2);
    const [e] = await b.commit({
      del: ['task://local/a'],
      events: [{ type: 'deleted', id: 'task://local/a', revision: 2, detail: {} }],
    });
    expect(e?.seq).toBe(3);
    expect((await b.readEvents(1, 3, 10)).map((x) => x.type)).toEqual(['created', 'modified', 'deleted']);
    await b.close();
  });

  test('a registry written by the previous version (IDs stored as strings) reads back ElementIds', async () => {
    const location = dir();
    // what lessl wrote before IDs were ElementIds everywhere: JSON with string IDs
    const raw = new Level<string, string>(location, { valueEncoding: 'utf8' });
    const t = '2025-01-01T00:00:00.000Z';
    const status = {
      ...{ state: 'exited', run: 1, executor: 'executor://local/x', exitCode: 0, reason: 'exited', startedAt: t, endedAt: t },
      ...{ outputBytes: 0, truncated: false, process: null },
    };
    const task = { id: 'task://local/a', ro: {}, rw: {}, revision: 1, created: t, modified: t, attributes: { status } };
    await raw.batch([
      { type: 'put', key: 'e!task://local/a', value: JSON.stringify(task) },
      {
        type: 'put',
        key: `l!${'1'.padStart(16, '0')}`,
        value: JSON.stringify({
          seq: 1,
          time: t,
          type: 'created',
          id: 'image://local/c',
          revision: 1,
          detail: { parent: 'image://local/p' },
        }),
      },
      {
        type: 'put',
        key: `l!${'2'.padStart(16, '0')}`,
        value: JSON.stringify({
          seq: 2,
          time: t,
          type: 'bound',
          id: 'task://local/a',
          revision: 1,
          detail: { executor: 'executor://local/x', run: 1 },
        }),
      },
    ]);
    await raw.close();
    const r = await Registry.open({ location });
    expect(r.lastSeq()).toBe(2);
    const [created, bound] = await r.readEvents(1, 2, 10);
    expect(isElementId(created?.id) && created.id.key).toBe('image://local/c');
    expect(isElementId(created?.detail.parent) && created.detail.parent.key).toBe('image://local/p');
    expect(isElementId(bound?.detail.executor) && bound.detail.executor.key).toBe('executor://local/x');
    expect(bound?.detail.run).toBe(1);
    expect(taskStatusOf(r.get('task://local/a')?.attributes ?? {}).executor?.key).toBe('executor://local/x');
    // replay through a stream decodes the same way; new events are written with string IDs and read back as ElementIds
    const [next] = await r.commit({
      events: [{ type: 'deleted', id: parseIdOrThrow('image://local/c'), revision: 1, detail: {} }],
    });
    expect(next?.seq).toBe(3);
    const seen: LesslEvent[] = [];
    for await (const e of r.events.stream({ ids: ['image://local/c'] }, { since: 0 })) {
      seen.push(e);
      if (e.seq === 3) break;
    }
    expect(seen.map((e) => [e.seq, e.id.key, isElementId(e.id)])).toEqual([
      [1, 'image://local/c', true],
      [3, 'image://local/c', true],
    ]);
    await r.close();
    const stored = new Level<string, string>(location, { valueEncoding: 'utf8' });
    expect(JSON.parse((await stored.get(`l!${'3'.padStart(16, '0')}`)) ?? '{}').id).toBe('image://local/c');
    await stored.close();
  });

  test('group commit: concurrent changes get consecutive seqs and are published in order', async () => {
    const r = await Registry.open({ memory: true });
    const seen: number[] = [];
    r.events.subscribe({}, (e) => seen.push(e.seq));
    const all = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        r.commit({
          put: [el(`task://local/t${i}`)],
          events: [{ type: 'created', id: `task://local/t${i}`, revision: 1, detail: {} }],
        }),
      ),
    );
    expect(all.map((evs) => evs[0]?.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    expect(seen).toEqual(Array.from({ length: 200 }, (_, i) => i + 1));
    await r.close();
  });

  test('children and users indexes follow puts, deletes and compositions', async () => {
    const r = await Registry.open();
    const child = { ...el('image://local/c'), parent: el('image://local/p').id };
    await r.commit({ put: [el('image://local/p'), child] });
    expect(r.childrenOf('image://local/p')).toEqual(['image://local/c']);
    await r.commit({
      putComposition: [
        { executor: 'executor://local/x', options: {}, members: [{ id: 'image://local/p', readOnly: false, state: 'bound' }] },
      ],
    });
    expect(r.usersOf('image://local/p')).toEqual(['executor://local/x']);
    await r.commit({ del: ['image://local/c'], delComposition: ['executor://local/x'] });
    expect(r.childrenOf('image://local/p')).toEqual([]);
    expect(r.usersOf('image://local/p')).toEqual([]);
    await r.close();
  });
});

describe('crash recovery', () => {
  test('a create interrupted after its intent leaves nothing visible; reopen removes the half-made object', async () => {
    const location = dir();
    const made = new Set<string>();
    let crash = true;
    const external: ElementDriver = {
      external: true,
      supportsData: true,
      async create(input) {
        made.add(input.id.key);
        if (crash) throw new Error('process killed');
        return E.right({ attributes: {} });
      },
      async destroy(e) {
        made.delete(e.id.key);
        return E.right(undefined);
      },
      async recover(intent) {
        made.delete(intent.id);
      },
    };
    const exec: ExecutorDriver = {
      commit: async () => E.right({ results: [], attributes: {} }),
      undo: async () => undefined,
      destroy: async () => E.right(undefined),
    };
    // Simulate a crash: the driver made its object and the process died before the record was written.
    const reg1 = await Registry.open({ location });
    await reg1.commit({ putIntent: [{ id: 'image://local/half', started: 't' }] });
    made.add('image://local/half');
    await reg1.close();

    const reg2 = await Registry.open({ location });
    expect(reg2.pendingIntents().map((i) => i.id)).toEqual(['image://local/half']);
    const b = await assemble({
      registry: reg2,
      stores: [{ kind: 'image', name: 'local' }],
      drivers: { image: external, volume: external, task: specOnlyTaskDriver },
      executor: exec,
    });
    if (E.isLeft(b)) throw new Error(b.left.message);
    expect(made.has('image://local/half')).toBe(false);
    expect(reg2.pendingIntents()).toEqual([]);
    const r = await b.right.stores.image.read('image://local/half')();
    expect(E.isLeft(r) && r.left._tag).toBe('NotFound');
    // a driver that throws mid-create answers RuntimeError and clears its intent
    const failed = await b.right.stores.image.create({ id: 'image://local/boom', data: new Uint8Array([1]) })();
    expect(E.isLeft(failed) && failed.left._tag).toBe('RuntimeError');
    expect(reg2.pendingIntents()).toEqual([]);
    crash = false;
    await unwrap(b.right.stores.image.create({ id: 'image://local/boom', data: new Uint8Array([1]) }));
    await b.right.close();
  });
});

describe('event log retention', () => {
  test('compactEvents removes events older than the cutoff (never the newest); a reopen goes on from the last seq', async () => {
    const location = dir();
    const a = await Registry.open({ location });
    const ev = (i: number) => ({ type: 'created' as const, id: `task://local/t${i}`, revision: 1, detail: {} });
    for (let i = 0; i < 5; i++) await a.commit({ events: [ev(i)] });
    expect(await a.compactEvents(new Date(0))).toBe(0); // nothing that old
    expect(await a.compactEvents(new Date(Date.now() + 60_000))).toBe(4);
    expect((await a.readEvents(0, 5, 10)).map((e) => e.seq)).toEqual([5]);
    expect(a.events.compactedSeq()).toBe(4);
    await a.close();
    const b = await Registry.open({ location });
    expect(b.lastSeq()).toBe(5);
    expect(b.events.compactedSeq()).toBe(4);
    const [e] = await b.commit({ events: [ev(9)] });
    expect(e?.seq).toBe(6);
    expect(await b.compactEvents(new Date(Date.now() + 60_000))).toBe(1);
    await b.close();
    // a reopen after the second compaction still goes on from the last seq
    const c = await Registry.open({ location });
    expect(c.lastSeq()).toBe(6);
    await c.close();
  });
});
