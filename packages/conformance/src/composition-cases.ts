/**
 * Composition cases: immutable handles, Join/Bind/Unbind/Leave rules, Conflict, rollback,
 * idempotence, in-use references.
 */
import { eventToJson, isElementId, type Handle, type LesslEvent, type StepResult } from '@lessl/core';
import { assert, fails, ok, recording, run, STORES, uniq } from './harness.js';
import { faultInjection } from './capabilities.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

export const compositionCases = (o: SuiteOptions, data: () => Promise<Uint8Array>): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const cases: Case[] = [];
  const add = (name: string, fn: (l: TestBackend) => Promise<void>, gate = true): void => {
    if (gate) cases.push({ name, fn });
  };
  const setup = async (l: TestBackend): Promise<{ image: string; volume: string; task: string; x: string }> => {
    const image = `image://local/${uniq('img')}`;
    const volume = `volume://local/${uniq('vol')}`;
    const task = `task://local/${uniq('task')}`;
    await ok(l.stores.image.create({ id: image, data: await data() }), 'create image');
    await ok(l.stores.volume.create({ id: volume }), 'create volume');
    await ok(l.stores.task.create({ id: task, spec }), 'create task');
    return { image, volume, task, x: `executor://local/${uniq('x')}` };
  };
  const compose = async (
    l: TestBackend,
    ids: { image: string; volume: string; task: string; x: string },
    bind = true,
  ): Promise<Handle> => {
    let h = await ok(l.composer.handle(ids.x));
    h = await ok(l.composer.join(h, ids.image));
    h = await ok(l.composer.join(h, ids.volume, { mountpoint: '/data' }));
    h = await ok(l.composer.join(h, ids.task));
    return bind ? ok(l.composer.bind(h, ids.task)) : h;
  };
  const statusOf = (rs: readonly StepResult[], id: string, op: string): string | undefined =>
    rs.find((r) => r.id.key === id && r.op === op)?.status;
  const cleanup = async (l: TestBackend, h: Handle): Promise<void> => {
    const fresh = await ok(l.composer.handle(h.executor));
    const r = await ok(l.composer.commit(await ok(l.composer.unbind(fresh))));
    assert.ok(r.committed, 'cleanup unbind');
    await ok(l.stores.executor.delete(h.executor));
  };

  add('ids: results, statuses and events name elements by ElementId; inputs take either form', async (l) => {
    const ids = await setup(l);
    const child = `image://local/${uniq('child')}`;
    const made = await recording(l.events, async () =>
      ok(l.stores.image.create({ id: child, parent: ids.image, data: await data() })),
    );
    const created = made.events.find((e) => e.id.key === child);
    assert.ok(created !== undefined && isElementId(created.id), 'the event id is an ElementId');
    assert.ok(isElementId(created.detail.parent) && created.detail.parent.key === ids.image, 'detail.parent is an ElementId');
    assert.ok(made.result.parent !== undefined && isElementId(made.result.parent));
    const kids = await ok(l.stores.image.list({ parent: made.result.parent }));
    assert.deepEqual(
      kids.map((k) => k.id.key),
      [child],
      'a list filter takes an ElementId parent',
    );
    const { result, events } = await recording(l.events, async () => ok(l.composer.commit(await compose(l, ids))));
    assert.ok(result.committed, JSON.stringify(result));
    if (!result.committed) return;
    for (const r of result.results) assert.ok(isElementId(r.id), `step ${r.op} names an ElementId`);
    const bound = events.find((e) => e.type === 'bound');
    assert.ok(bound !== undefined && isElementId(bound.id) && bound.id.key === ids.task);
    assert.ok(isElementId(bound.detail.executor) && bound.detail.executor.key === ids.x, 'detail.executor is an ElementId');
    assert.equal(eventToJson(bound).id, ids.task, 'the JSON form holds strings');
    assert.equal(eventToJson(bound).detail.executor, ids.x);
    const st = await ok(l.tasks.status(ids.task));
    assert.ok(st.executor !== null && isElementId(st.executor) && st.executor.key === ids.x, 'status.executor is an ElementId');
    const byId: LesslEvent[] = [];
    const off = l.events.subscribe({ ids: [bound.id] }, (e) => byId.push(e));
    const fresh = await ok(l.composer.handle(result.handle.executor));
    const down = await ok(l.composer.commit(await ok(l.composer.unbind(fresh, bound.id))));
    off();
    assert.ok(down.committed);
    for (const r of down.results) assert.ok(isElementId(r.id) && (r.task === undefined || isElementId(r.task.id)));
    assert.deepEqual(
      byId.map((e) => [e.type, e.id.key]),
      [['unbound', ids.task]],
      'an event filter takes ElementIds',
    );
    await cleanup(l, down.handle);
  });

  add('composition: join, bind and commit create the executor; events come in order', async (l) => {
    const ids = await setup(l);
    const h = await compose(l, ids);
    assert.equal(h.revision, 0);
    const { result, events } = await recording(l.events, () => ok(l.composer.commit(h)));
    assert.ok(result.committed, JSON.stringify(result));
    if (!result.committed) return;
    assert.equal(result.executor.revision, 1);
    assert.equal(result.handle.revision, 1);
    for (const id of [ids.image, ids.volume, ids.task]) assert.equal(statusOf(result.results, id, 'join'), 'SUCCESS');
    assert.equal(statusOf(result.results, ids.task, 'bind'), 'SUCCESS');
    const mine = events.filter((e) => e.id.key === ids.x || e.detail.executor?.key === ids.x);
    assert.deepEqual(
      mine.map((e) => e.type),
      ['created', 'joined', 'joined', 'joined', 'bound'],
    );
    for (let i = 1; i < events.length; i++) assert.equal(events[i]?.seq, (events[i - 1]?.seq ?? 0) + 1);
    const snap = await ok(l.composer.handle(ids.x));
    assert.equal(snap.revision, 1);
    assert.deepEqual(
      snap.members.map((m) => [m.id.key, m.state, m.mountpoint ?? null]),
      [
        [ids.image, 'unbound', null],
        [ids.volume, 'unbound', '/data'],
        [ids.task, 'bound', null],
      ],
    );
    await cleanup(l, result.handle);
  });
  add('composition: handles are immutable values', async (l) => {
    const ids = await setup(l);
    const h0 = await ok(l.composer.handle(ids.x));
    const h1 = await ok(l.composer.join(h0, ids.task));
    const h2 = await ok(l.composer.bind(h1, ids.task));
    assert.equal(h0.members.length, 0);
    assert.equal(h1.members[0]?.state, 'unbound');
    assert.equal(h2.members[0]?.state, 'bound');
    const h3 = await ok(l.composer.leave(h2, ids.task));
    assert.equal(h3.members.length, 0);
    assert.equal(h2.members.length, 1);
  });
  add('composition: a stale handle answers Conflict; a fresh handle commits', async (l) => {
    const ids = await setup(l);
    const first = await ok(l.composer.commit(await compose(l, ids, false)));
    assert.ok(first.committed);
    const a = await ok(l.composer.handle(ids.x));
    const b = await ok(l.composer.handle(ids.x));
    const ra = await ok(l.composer.commit(await ok(l.composer.bind(a, ids.task))));
    assert.ok(ra.committed);
    const e = await fails(l.composer.commit(await ok(l.composer.leave(b, ids.volume))), 'Conflict');
    assert.equal(e.expected, 1);
    assert.equal(e.actual, 2);
    const fresh = await ok(l.composer.handle(ids.x));
    const rb = await ok(l.composer.commit(await ok(l.composer.unbind(fresh, ids.task))));
    assert.ok(rb.committed);
    await ok(l.stores.executor.delete(ids.x));
  });
  add('composition: two handles on a new executor: the second commit is Conflict', async (l) => {
    const ids = await setup(l);
    const a = await ok(l.composer.join(await ok(l.composer.handle(ids.x)), ids.task));
    const b = await ok(l.composer.join(await ok(l.composer.handle(ids.x)), ids.task));
    const rs = await Promise.all([run(l.composer.commit(a)), run(l.composer.commit(b))]);
    const won = rs.filter((r) => r._tag === 'Right' && r.right.committed).length;
    const lost = rs.filter((r) => r._tag === 'Left' && r.left._tag === 'Conflict').length;
    assert.deepEqual([won, lost], [1, 1]);
  });
  add('composition: transitions are idempotent: re-binding is a NOOP with no events', async (l) => {
    const ids = await setup(l);
    const r1 = await ok(l.composer.commit(await compose(l, ids)));
    assert.ok(r1.committed);
    if (!r1.committed) return;
    const same = await ok(l.composer.bind(r1.handle, ids.task));
    assert.equal(same, r1.handle);
    const again = await ok(l.composer.join(r1.handle, ids.task));
    assert.equal(again, r1.handle);
    const { result: r2, events } = await recording(l.events, () => ok(l.composer.commit(r1.handle)));
    assert.ok(r2.committed);
    assert.ok(r2.results.every((r) => r.status === 'NOOP'));
    assert.deepEqual(
      events.map((e) => e.type),
      ['modified'],
    );
    if (r2.committed) await cleanup(l, r2.handle);
  });
  add('composition: unbind then leave publish unbound and left and release the element', async (l) => {
    const ids = await setup(l);
    const r1 = await ok(l.composer.commit(await compose(l, ids)));
    assert.ok(r1.committed);
    if (!r1.committed) return;
    const inUse = await fails(l.stores.volume.delete(ids.volume), 'InUse');
    assert.deepEqual(inUse.referencedBy, [ids.x]);
    let h = await ok(l.composer.unbind(r1.handle, ids.task));
    h = await ok(l.composer.leave(h, ids.volume));
    const { result: r2, events } = await recording(l.events, () => ok(l.composer.commit(h)));
    assert.ok(r2.committed);
    assert.deepEqual(
      events.map((e) => [e.type, e.id.key]),
      [
        ['modified', ids.x],
        ['unbound', ids.task],
        ['left', ids.volume],
      ],
    );
    await ok(l.stores.volume.delete(ids.volume));
    await fails(l.stores.task.delete(ids.task), 'InUse');
    await ok(l.stores.executor.delete(ids.x));
    await ok(l.stores.task.delete(ids.task));
    await ok(l.stores.image.delete(ids.image));
  });
  add('composition: deleting an executor with bound members is InUse naming them', async (l) => {
    const ids = await setup(l);
    const r1 = await ok(l.composer.commit(await compose(l, ids)));
    assert.ok(r1.committed);
    const e = await fails(l.stores.executor.delete(ids.x), 'InUse');
    assert.ok(e.referencedBy.includes(ids.task));
    if (r1.committed) await cleanup(l, r1.handle);
    await fails(l.stores.executor.read(ids.x), 'NotFound');
    await ok(l.stores.task.delete(ids.task));
  });
  add('composition: join validates: NotFound, second image, mountpoints, executors, kinds', async (l) => {
    const ids = await setup(l);
    const h = await ok(l.composer.handle(ids.x));
    await fails(l.composer.join(h, `task://local/${uniq('ghost')}`), 'NotFound');
    await fails(l.composer.join(h, 'task://elsewhere/x'), 'UnknownLocation');
    await fails(l.composer.join(h, 'not an id'), 'InvalidEntry');
    const other = `image://local/${uniq('img2')}`;
    await ok(l.stores.image.create({ id: other, data: await data() }));
    const withImage = await ok(l.composer.join(h, ids.image));
    await fails(l.composer.join(withImage, other), 'InvalidEntry');
    await fails(l.composer.join(h, ids.volume), 'InvalidEntry');
    await fails(l.composer.join(h, ids.volume, { mountpoint: 'relative' }), 'InvalidEntry');
    await fails(l.composer.join(h, ids.volume, { mountpoint: '/a/../etc' }), 'InvalidEntry');
    await fails(l.composer.join(h, ids.volume, { mountpoint: '/' }), 'InvalidEntry');
    await fails(l.composer.join(h, ids.task, { mountpoint: '/x' }), 'InvalidEntry');
    const v2 = `volume://local/${uniq('vol2')}`;
    await ok(l.stores.volume.create({ id: v2 }));
    const withVol = await ok(l.composer.join(h, ids.volume, { mountpoint: '/data' }));
    await fails(l.composer.join(withVol, v2, { mountpoint: '/data/' }), 'InvalidEntry');
    await ok(l.stores.executor.create({ id: `executor://local/${uniq('x2')}` }));
    await fails(l.composer.join(h, ids.x.replace(/\/[^/]+$/, '/nobody')), 'InvalidEntry');
    await fails(l.composer.join(illTyped({ nope: true }), ids.task), 'InvalidEntry');
    await fails(l.composer.handle('image://local/x'), 'UnknownLocation');
    await fails(l.composer.handle(ids.x, { memoryBytes: -5 }), 'InvalidEntry');
  });
  add('composition: bind/unbind/leave of a non-member is NotFound', async (l) => {
    const ids = await setup(l);
    const h = await ok(l.composer.handle(ids.x));
    await fails(l.composer.bind(h, ids.task), 'NotFound');
    await fails(l.composer.unbind(h, ids.task), 'NotFound');
    await fails(l.composer.leave(h, ids.task), 'NotFound');
  });
  add('composition: an element deleted after join fails the commit with NotFound; nothing is created', async (l) => {
    const ids = await setup(l);
    const h = await ok(l.composer.join(await ok(l.composer.handle(ids.x)), ids.task));
    await ok(l.stores.task.delete(ids.task));
    await fails(l.composer.commit(h), 'NotFound');
    await fails(l.stores.executor.read(ids.x), 'NotFound');
  });
  add(
    'composition: a failing step rolls the whole commit back; no events; the executor is unchanged',
    async () => {
      const ids0 = { volume: '', task: '' };
      const task = `task://local/${uniq('task')}`;
      const l = await o.factory({ stores: STORES, failStep: { op: 'bind', id: task } });
      try {
        ids0.task = task;
        await ok(l.stores.task.create({ id: task, spec }));
        const x = `executor://local/${uniq('x')}`;
        const h = await ok(l.composer.bind(await ok(l.composer.join(await ok(l.composer.handle(x)), task)), task));
        const { result, events } = await recording(l.events, () => ok(l.composer.commit(h)));
        assert.equal(result.committed, false);
        if (result.committed) return;
        assert.equal(result.error._tag, 'RuntimeError');
        assert.equal(statusOf(result.results, task, 'bind'), 'ERROR');
        assert.equal(events.length, 0);
        await fails(l.stores.executor.read(x), 'NotFound');
        await ok(l.stores.task.delete(task));
      } finally {
        await l.close();
      }
    },
    faultInjection(o),
  );
  add('commit: a read-only executor store refuses the commit (InvalidLocation); nothing is created', async () => {
    const l = await o.factory({ stores: [...STORES, { kind: 'executor', name: 'ro', policy: 'read-only' }] });
    try {
      const image = `image://local/${uniq('img')}`;
      await ok(l.stores.image.create({ id: image, data: await data() }), 'create image');
      const x = `executor://ro/${uniq('x')}`;
      const h = await ok(l.composer.join(await ok(l.composer.handle(x)), image));
      const { result, events } = await recording(l.events, () => fails(l.composer.commit(h), 'InvalidLocation'));
      assert.equal(result.policy, 'read-only');
      assert.equal(result.operation, 'compose');
      assert.deepEqual(events, []);
      await fails(l.stores.executor.read(x), 'NotFound');
      // the image is not in use: nothing refers to it
      await ok(l.stores.image.delete(image));
    } finally {
      await l.close();
    }
  });
  return cases;
};
