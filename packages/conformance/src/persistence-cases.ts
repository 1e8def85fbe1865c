/**
 * Persistence cases: a backend reopened at the same location has the same elements, and its
 * event log continues its sequence. They need the `tempDir` fixture and run on a backend whose
 * manifest says `reopen`.
 */
import { needs } from './capabilities.js';
import { assert, b, fails, ok, s, STORES, uniq } from './harness.js';
import type { Case, SuiteOptions } from './types.js';

export const persistenceCases = (o: SuiteOptions): Case[] => {
  const tempDir = o.fixtures?.tempDir;
  if (tempDir === undefined) return [];
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  return [
    needs(o, 'reopen', {
      name: 'persistence: a reopened backend has the same elements, and the event log continues its sequence',
      fn: async () => {
        const location = tempDir();
        const id = `task://local/${uniq('p')}`;
        const a = await o.factory({ stores: STORES, location });
        let seq: number;
        try {
          await ok(a.stores.task.create({ id, spec, ro: { r: b('1') }, rw: { w: b('1') } }));
          await ok(a.stores.task.update(id, { w: b('2') }));
          seq = a.events.lastSeq();
        } finally {
          await a.close();
        }
        const ro = STORES.map((c) => (c.kind === 'task' && c.name === 'local' ? { ...c, policy: 'read-only' as const } : c));
        const bk = await o.factory({ stores: ro, location });
        try {
          const el = await ok(bk.stores.task.read(id));
          assert.equal(el.revision, 2);
          assert.equal(s(el.ro.r), '1');
          assert.equal(s(el.rw.w), '2');
          assert.equal(bk.events.lastSeq(), seq);
          const replay: string[] = [];
          for await (const e of bk.events.stream({ ids: [id] }, { since: 0 })) {
            replay.push(e.type);
            if (replay.length === 2) break;
          }
          assert.deepEqual(replay, ['created', 'modified']);
          // a read-only store refuses writes to what it holds
          await fails(bk.stores.task.update(id, { w: b('3') }), 'InvalidLocation');
          await fails(bk.stores.task.delete(id), 'InvalidLocation');
          await fails(bk.stores.task.create({ id: `task://local/${uniq()}`, spec }), 'InvalidLocation');
          const other = `task://co/${uniq()}`;
          await ok(bk.stores.task.create({ id: other, spec }));
          assert.equal(bk.events.lastSeq(), seq + 1);
        } finally {
          await bk.close();
        }
      },
    }),
  ];
};
