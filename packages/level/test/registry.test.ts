import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { parseId, unwrap, utf8, type Element } from '@lessl/core';
import { assemble, Registry, specOnlyTaskDriver, type ElementDriver, type ExecutorDriver } from '@lessl/level';

const el = (key: string, revision = 1): Element => {
  const id = parseId(key);
  if (E.isLeft(id)) throw new Error(key);
  return { id: id.right, ro: utf8({ a: '1' }), rw: {}, revision, created: 't', modified: 't', attributes: {} };
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
