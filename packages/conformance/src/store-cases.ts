/**
 * Store cases: every error row of the taxonomy for create/read/update/delete/list.
 */
import { sha256 } from '@lessl/core';
import type { Element } from '@lessl/core';
import { assert, b, fails, ok, recording, run, s, STORES, uniq } from './harness.js';
import { needs, type Capability } from './capabilities.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

export const storeCases = (o: SuiteOptions, data: () => Promise<Uint8Array>): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const cases: Case[] = [];
  /** Adds a case; one that `need`s a capability runs on a backend whose manifest claims it. */
  const add = (name: string, fn: (l: TestBackend) => Promise<void>, need?: Capability): void => {
    cases.push(need === undefined ? { name, fn } : needs(o, need, { name, fn }));
  };
  const img = (): string => `image://local/${uniq('img')}`;
  const task = (): string => `task://local/${uniq('task')}`;

  // ---- create -------------------------------------------------------------
  add('create: answers the element at revision 1 with ro, rw and a created event', async (l) => {
    const id = task();
    const { result: el, events } = await recording(l.events, () =>
      ok(l.stores.task.create({ id, spec, ro: { owner: b('ann') }, rw: { note: b('x') } })),
    );
    assert.equal(el.id.key, id);
    assert.equal(el.revision, 1);
    assert.equal(s(el.ro.owner), 'ann');
    assert.equal(s(el.rw.note), 'x');
    assert.ok(!Number.isNaN(Date.parse(el.created)));
    const created = events.filter((e) => e.id.key === id);
    assert.equal(created.length, 1);
    assert.equal(created[0]?.type, 'created');
    assert.equal(created[0]?.revision, 1);
    const back = await ok(l.stores.task.read(id));
    assert.deepEqual(back.attributes.spec, spec);
  });
  add('create: UnknownLocation for a store that is not configured', async (l) => {
    const e = await fails(l.stores.task.create({ id: 'task://nowhere/x', spec }), 'UnknownLocation');
    assert.match(e.store, /nowhere/);
  });
  add('create: UnknownLocation for an ID of another kind', async (l) => {
    await fails(l.stores.image.create({ id: 'task://local/x', spec }), 'UnknownLocation');
  });
  add('create: InvalidLocation in a read-only store', async (l) => {
    const e = await fails(l.stores.image.create({ id: `image://ro/${uniq()}`, data: await data() }), 'InvalidLocation');
    assert.equal(e.policy, 'read-only');
    assert.equal(e.operation, 'create');
  });
  add('create: a create-only store accepts creates', async (l) => {
    await ok(l.stores.task.create({ id: `task://co/${uniq()}`, spec }));
  });
  add('create: NameCollision for an existing ID, and the first element is untouched', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec, rw: { v: b('1') } }));
    const e = await fails(l.stores.task.create({ id, spec, rw: { v: b('2') } }), 'NameCollision');
    assert.equal(e.id, id);
    assert.equal(s((await ok(l.stores.task.read(id))).rw.v), '1');
  });
  add('create: concurrent creates of one ID: exactly one wins', async (l) => {
    const id = task();
    const rs = await Promise.all([1, 2, 3, 4].map(() => run(l.stores.task.create({ id, spec }))));
    assert.equal(rs.filter((r) => r._tag === 'Right').length, 1);
    for (const r of rs) if (r._tag === 'Left') assert.equal(r.left._tag, 'NameCollision');
  });
  add('create: InvalidEntry for malformed IDs', async (l) => {
    for (const bad of ['', 'task:/local/x', 'task://local/', 'task://Local/x', 'task://local/a/../b', 'nope://local/x', 42])
      await fails(l.stores.task.create({ id: illTyped(bad), spec }), 'InvalidEntry', `id ${String(bad)}`);
  });
  add('create: InvalidEntry for a nil value in ro or rw, naming the key', async (l) => {
    const e1 = await fails(l.stores.task.create({ id: task(), spec, ro: { a: illTyped(null) } }), 'InvalidEntry');
    assert.deepEqual(e1.keys, ['a']);
    const e2 = await fails(l.stores.task.create({ id: task(), spec, rw: { b: illTyped(undefined) } }), 'InvalidEntry');
    assert.deepEqual(e2.keys, ['b']);
  });
  add('create: InvalidEntry for bad keys, non-byte values and oversize values', async (l) => {
    const e = await fails(
      l.stores.task.create({
        id: task(),
        spec,
        rw: { 'bad key': b('x'), ok: b('y'), str: illTyped('text'), big: new Uint8Array(64 * 1024 + 1) },
      }),
      'InvalidEntry',
    );
    assert.deepEqual([...e.keys].sort(), ['bad key', 'big', 'str']);
  });
  add('create: ReadOnlyKey when a key is in both ro and rw', async (l) => {
    const id = task();
    const e = await fails(l.stores.task.create({ id, spec, ro: { k: b('1') }, rw: { k: b('2'), j: b('3') } }), 'ReadOnlyKey');
    assert.deepEqual(e.keys, ['k']);
    await fails(l.stores.task.read(id), 'NotFound');
  });
  add('create: InvalidEntry for an invalid task spec, naming the field', async (l) => {
    const e = await fails(l.stores.task.create({ id: task(), spec: { cmd: [] } }), 'InvalidEntry');
    assert.ok(e.keys.includes('cmd'));
    await fails(l.stores.task.create({ id: task(), spec: { cmd: ['x'], limits: { memoryBytes: -1 } } }), 'InvalidEntry');
    await fails(l.stores.task.create({ id: task() }), 'InvalidEntry');
  });
  add('create: PermissionDenied from the authorizer', async () => {
    const l = await o.factory({ stores: STORES_PD, authorize: (p, op) => !(p === 'mallory' && op !== 'read') });
    try {
      const e = await fails(l.stores.task.create({ id: task(), spec }, { principal: 'mallory' }), 'PermissionDenied');
      assert.equal(e.principal, 'mallory');
      assert.equal(e.operation, 'create');
      await ok(l.stores.task.create({ id: task(), spec }, { principal: 'ann' }));
    } finally {
      await l.close();
    }
  });
  add('create: Unsupported for data on a task', async (l) => {
    await fails(l.stores.task.create({ id: task(), spec, data: b('x') }), 'Unsupported');
  });
  add(
    'create: data with a matching checksum is recorded',
    async (l) => {
      const bytes = await data();
      const el = await ok(l.stores.image.create({ id: img(), data: bytes, checksum: sha256(bytes) }));
      assert.equal(el.checksum, sha256(bytes));
    },
    'data',
  );
  add(
    'create: ChecksumMismatch creates nothing and publishes nothing',
    async (l) => {
      const id = img();
      const bytes = await data();
      const wrong = sha256(b('something else'));
      const { events } = await recording(l.events, async () => {
        const e = await fails(l.stores.image.create({ id, data: bytes, checksum: wrong }), 'ChecksumMismatch');
        assert.equal(e.expected, wrong);
        assert.equal(e.actual, sha256(bytes));
      });
      assert.equal(events.length, 0);
      await fails(l.stores.image.read(id), 'NotFound');
      assert.equal((await ok(l.stores.image.list({ namePrefix: id.split('/').pop() }))).length, 0);
      await ok(l.stores.image.create({ id, data: bytes }));
    },
    'data',
  );
  add(
    'create: UnsupportedChecksum for another algorithm; InvalidEntry for a checksum without data',
    async (l) => {
      await fails(l.stores.image.create({ id: img(), data: await data(), checksum: 'md5:abc' }), 'UnsupportedChecksum');
      await fails(l.stores.image.create({ id: img(), checksum: sha256(b('x')) }), 'InvalidEntry');
    },
    'data',
  );
  add(
    'create: a stream that fails midway is RuntimeError and leaves nothing',
    async (l) => {
      const id = img();
      const broken = (async function* () {
        yield b('partial');
        throw new Error('disk on fire');
      })();
      const e = await fails(l.stores.image.create({ id, data: broken }), 'RuntimeError');
      assert.match(e.message + (e.cause ?? ''), /disk on fire/);
      await fails(l.stores.image.read(id), 'NotFound');
      await ok(l.stores.image.create({ id, data: await data() }));
    },
    'data',
  );
  add(
    'create: InvalidEntry for data that is not bytes',
    async (l) => {
      await fails(l.stores.image.create({ id: img(), data: illTyped('text') }), 'InvalidEntry');
      const mixed = (async function* () {
        yield illTyped(42);
      })();
      await fails(l.stores.image.create({ id: img(), data: mixed }), 'InvalidEntry');
    },
    'data',
  );
  add(
    'create: UnknownParent, InvalidParent (kind mismatch, store forbids parents), and a valid parent',
    async (l) => {
      const parent = img();
      await ok(l.stores.image.create({ id: parent, data: await data() }));
      const missing = `image://local/${uniq('ghost')}`;
      const e1 = await fails(l.stores.image.create({ id: img(), parent: missing, data: await data() }), 'UnknownParent');
      assert.equal(e1.parent, missing);
      const vol = `volume://local/${uniq('vol')}`;
      await ok(l.stores.volume.create({ id: vol }));
      const e2 = await fails(l.stores.image.create({ id: img(), parent: vol, data: await data() }), 'InvalidParent');
      assert.match(e2.reason, /volume/);
      await fails(l.stores.volume.create({ id: `volume://flat/${uniq()}`, parent: vol }), 'InvalidParent');
      await fails(l.stores.image.create({ id: img(), parent: 'image://local/../x' }), 'InvalidEntry');
      const child = img();
      const el = await ok(l.stores.image.create({ id: child, parent, data: await data() }));
      assert.equal(el.parent?.key, parent);
    },
    'parents',
  );

  // ---- read ---------------------------------------------------------------
  add('read: NotFound, UnknownLocation, InvalidEntry for a malformed ID', async (l) => {
    await fails(l.stores.task.read(task()), 'NotFound');
    await fails(l.stores.task.read('task://elsewhere/x'), 'UnknownLocation');
    await fails(l.stores.task.read('garbage'), 'InvalidEntry');
  });
  add('read: the filter spec selects parts and keys; a bad one is InvalidFilterSpec', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec, ro: { a: b('1'), b: b('2') }, rw: { c: b('3') } }));
    const only = await ok(l.stores.task.read(id, { parts: ['ro'], keys: ['a'] }));
    assert.deepEqual(Object.keys(only.ro), ['a']);
    assert.deepEqual(only.rw, {});
    assert.deepEqual(only.attributes, {});
    const all = await ok(l.stores.task.read(id));
    assert.deepEqual(Object.keys(all.ro).sort(), ['a', 'b']);
    assert.ok('spec' in all.attributes);
    await fails(l.stores.task.read(id, illTyped({ parts: ['bogus'] })), 'InvalidFilterSpec');
    await fails(l.stores.task.read(id, illTyped({ wat: 1 })), 'InvalidFilterSpec');
    await fails(l.stores.task.read(id, illTyped('x')), 'InvalidFilterSpec');
    await fails(l.stores.task.read(id, illTyped({ keys: [3] })), 'InvalidFilterSpec');
  });

  // ---- update -------------------------------------------------------------
  add('update: sets and deletes rw keys, bumps revision, publishes modified', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec, rw: { a: b('1'), b: b('2') } }));
    const { result: el, events } = await recording(l.events, () =>
      ok(l.stores.task.update(id, { a: b('9'), b: null, c: b('3') })),
    );
    assert.equal(el.revision, 2);
    assert.deepEqual(Object.keys(el.rw).sort(), ['a', 'c']);
    assert.equal(s(el.rw.a), '9');
    assert.equal(events.length, 1);
    assert.equal(events[0]?.type, 'modified');
    assert.equal(events[0]?.revision, 2);
    const keys = events[0]?.detail.keys;
    assert.ok(Array.isArray(keys), 'the modified event names the keys');
    assert.deepEqual([...keys].sort(), ['a', 'b', 'c']);
    const again = await ok(l.stores.task.read(id));
    assert.equal(again.revision, 2);
    assert.equal(s(again.rw.c), '3');
  });
  add('update: NotFound, UnknownLocation, InvalidEntry for a malformed ID', async (l) => {
    await fails(l.stores.task.update(task(), { a: b('1') }), 'NotFound');
    await fails(l.stores.task.update('task://elsewhere/x', { a: b('1') }), 'UnknownLocation');
    await fails(l.stores.task.update('::', { a: b('1') }), 'InvalidEntry');
  });
  add('update: InvalidLocation in a create-only store', async (l) => {
    const id = `task://co/${uniq()}`;
    await ok(l.stores.task.create({ id, spec }));
    const e = await fails(l.stores.task.update(id, { a: b('1') }), 'InvalidLocation');
    assert.equal(e.policy, 'create-only');
  });
  add('update: InvalidEntry for bad keys or values; ReadOnlyKey for ro keys; nothing changes', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec, ro: { fixed: b('1') }, rw: { a: b('1') } }));
    const e1 = await fails(l.stores.task.update(id, { 'no spaces': b('1') }), 'InvalidEntry');
    assert.deepEqual(e1.keys, ['no spaces']);
    await fails(l.stores.task.update(id, { a: illTyped(5) }), 'InvalidEntry');
    await fails(l.stores.task.update(id, illTyped(null)), 'InvalidEntry');
    const e2 = await fails(l.stores.task.update(id, { fixed: b('2'), a: b('2') }), 'ReadOnlyKey');
    assert.deepEqual(e2.keys, ['fixed']);
    const el = await ok(l.stores.task.read(id));
    assert.equal(el.revision, 1);
    assert.equal(s(el.rw.a), '1');
  });
  add('update: ifRevision matching succeeds; stale answers Conflict with expected and actual', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec }));
    await ok(l.stores.task.update(id, { a: b('1') }, { ifRevision: 1 }));
    const e = await fails(l.stores.task.update(id, { a: b('2') }, { ifRevision: 1 }), 'Conflict');
    assert.equal(e.expected, 1);
    assert.equal(e.actual, 2);
    await fails(l.stores.task.update(id, { a: b('2') }, { ifRevision: -3 }), 'InvalidEntry');
  });
  add('update: concurrent updates with the same ifRevision: exactly one wins', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec }));
    const rs = await Promise.all([1, 2, 3].map((i) => run(l.stores.task.update(id, { n: b(String(i)) }, { ifRevision: 1 }))));
    assert.equal(rs.filter((r) => r._tag === 'Right').length, 1);
    assert.equal((await ok(l.stores.task.read(id))).revision, 2);
  });
  add('update: PermissionDenied from the authorizer', async () => {
    const l = await o.factory({ stores: STORES_PD, authorize: (p, op) => !(p === 'mallory' && op === 'update') });
    try {
      const id = task();
      await ok(l.stores.task.create({ id, spec }));
      await fails(l.stores.task.update(id, { a: b('1') }, {}, { principal: 'mallory' }), 'PermissionDenied');
      await ok(l.stores.task.update(id, { a: b('1') }, {}, { principal: 'ann' }));
    } finally {
      await l.close();
    }
  });

  // ---- delete -------------------------------------------------------------
  add('delete: removes the element and publishes deleted; a second delete is NotFound', async (l) => {
    const id = task();
    await ok(l.stores.task.create({ id, spec }));
    const { events } = await recording(l.events, () => ok(l.stores.task.delete(id)));
    assert.deepEqual(
      events.map((e) => [e.type, e.id.key]),
      [['deleted', id]],
    );
    await fails(l.stores.task.read(id), 'NotFound');
    await fails(l.stores.task.delete(id), 'NotFound');
    await ok(l.stores.task.create({ id, spec }));
  });
  add('delete: UnknownLocation, InvalidEntry, InvalidLocation (create-only)', async (l) => {
    await fails(l.stores.task.delete('task://elsewhere/x'), 'UnknownLocation');
    await fails(l.stores.task.delete('task:local'), 'InvalidEntry');
    const id = `task://co/${uniq()}`;
    await ok(l.stores.task.create({ id, spec }));
    await fails(l.stores.task.delete(id), 'InvalidLocation');
    await ok(l.stores.task.read(id));
  });
  add(
    'delete: InUse lists the children; deleting the child first frees the parent',
    async (l) => {
      const parent = img();
      const c1 = img();
      const c2 = img();
      await ok(l.stores.image.create({ id: parent, data: await data() }));
      await ok(l.stores.image.create({ id: c1, parent, data: await data() }));
      await ok(l.stores.image.create({ id: c2, parent, data: await data() }));
      const e = await fails(l.stores.image.delete(parent), 'InUse');
      assert.deepEqual([...e.referencedBy].filter((r) => r.startsWith('image://')).sort(), [c1, c2].sort());
      await ok(l.stores.image.delete(c1));
      await ok(l.stores.image.delete(c2));
      await ok(l.stores.image.delete(parent));
    },
    'parents',
  );
  add('delete: PermissionDenied from the authorizer', async () => {
    const l = await o.factory({ stores: STORES_PD, authorize: (p, op) => !(p === 'mallory' && op === 'delete') });
    try {
      const id = task();
      await ok(l.stores.task.create({ id, spec }));
      await fails(l.stores.task.delete(id, { principal: 'mallory' }), 'PermissionDenied');
      await ok(l.stores.task.read(id));
    } finally {
      await l.close();
    }
  });

  // ---- list ---------------------------------------------------------------
  add('list: filters by name prefix, ro/rw equality, parent, store, limit; bad specs are InvalidFilterSpec', async (l) => {
    const stem = uniq('ls');
    const ids = [0, 1, 2, 3].map((i) => `task://local/${stem}-${i}`);
    for (const [i, id] of ids.entries())
      await ok(l.stores.task.create({ id, spec, ro: { team: b(i % 2 === 0 ? 'red' : 'blue') }, rw: { n: b(String(i)) } }));
    const pick = (els: readonly Element[]): string[] => els.map((e) => e.id.key);
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem }))), ids);
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem, ro: { team: 'red' } }))), [ids[0], ids[2]]);
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem, rw: { n: '3' } }))), [ids[3]]);
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem, limit: 2 }))), ids.slice(0, 2));
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem, store: 'co' }))), []);
    assert.deepEqual(pick(await ok(l.stores.task.list({ namePrefix: stem, kind: 'image' }))), []);
    const projected = await ok(l.stores.task.list({ namePrefix: stem, parts: ['rw'] }));
    assert.deepEqual(projected[0]?.ro, {});
    await fails(l.stores.task.list({ limit: -1 }), 'InvalidFilterSpec');
    await fails(l.stores.task.list(illTyped({ kind: 'cat' })), 'InvalidFilterSpec');
    await fails(l.stores.task.list({ parent: 'nope' }), 'InvalidFilterSpec');
    await fails(l.stores.task.list(illTyped({ ro: { team: 1 } })), 'InvalidFilterSpec');
    await fails(l.stores.task.list({ store: 'elsewhere' }), 'UnknownLocation');
  });
  add(
    'list: children of a parent',
    async (l) => {
      const parent = img();
      await ok(l.stores.image.create({ id: parent, data: await data() }));
      const child = img();
      await ok(l.stores.image.create({ id: child, parent, data: await data() }));
      const kids = await ok(l.stores.image.list({ parent }));
      assert.deepEqual(
        kids.map((e) => e.id.key),
        [child],
      );
    },
    'parents',
  );
  add('list: the authorizer hides what a principal may not read', async () => {
    const stem = uniq('auth');
    const l = await o.factory({
      stores: STORES_PD,
      authorize: (p, op, id) => !(p === 'mallory' && op === 'read' && id.endsWith('-secret')),
    });
    try {
      await ok(l.stores.task.create({ id: `task://local/${stem}-open`, spec }));
      await ok(l.stores.task.create({ id: `task://local/${stem}-secret`, spec }));
      const seen = await ok(l.stores.task.list({ namePrefix: stem }, { principal: 'mallory' }));
      assert.deepEqual(
        seen.map((e) => e.id.name),
        [`${stem}-open`],
      );
      await fails(l.stores.task.read(`task://local/${stem}-secret`, undefined, { principal: 'mallory' }), 'PermissionDenied');
    } finally {
      await l.close();
    }
  });
  add('list: an authorizer refusing list answers PermissionDenied; each element is asked for read', async () => {
    const stem = uniq('lst');
    const asked: string[] = [];
    const l = await o.factory({
      stores: STORES_PD,
      authorize: (p, op, id) => {
        if (p === 'mallory' || p === 'ann') asked.push(`${p} ${op} ${id}`);
        return !(p === 'mallory' && op === 'list');
      },
    });
    try {
      await ok(l.stores.task.create({ id: `task://local/${stem}-a`, spec }));
      await ok(l.stores.task.create({ id: `task://local/${stem}-b`, spec }));
      const all = await fails(l.stores.task.list({ namePrefix: stem }, { principal: 'mallory' }), 'PermissionDenied');
      assert.equal(all.operation, 'list');
      assert.equal(all.id, 'task://');
      const one = await fails(l.stores.task.list({ store: 'local' }, { principal: 'mallory' }), 'PermissionDenied');
      assert.equal(one.id, 'task://local');
      assert.deepEqual(asked.splice(0), ['mallory list task://', 'mallory list task://local']);
      const seen = await ok(l.stores.task.list({ namePrefix: stem }, { principal: 'ann' }));
      assert.equal(seen.length, 2);
      assert.deepEqual(asked, ['ann list task://', `ann read task://local/${stem}-a`, `ann read task://local/${stem}-b`]);
    } finally {
      await l.close();
    }
  });
  add(
    'a refused principal gets PermissionDenied whether or not the ID exists (read, update, delete, handle, join, commit)',
    async () => {
      const l = await o.factory({ stores: STORES_PD, authorize: (p) => p !== 'mallory' });
      try {
        const there = `task://local/${uniq('pd')}`;
        const absent = `task://local/${uniq('pd')}`;
        await ok(l.stores.task.create({ id: there, spec }));
        const m = { principal: 'mallory' };
        for (const id of [there, absent]) {
          await fails(l.stores.task.read(id, undefined, m), 'PermissionDenied', `read ${id}`);
          await fails(l.stores.task.update(id, { a: b('1') }, {}, m), 'PermissionDenied', `update ${id}`);
          await fails(l.stores.task.delete(id, m), 'PermissionDenied', `delete ${id}`);
          const h = await ok(l.composer.handle(`executor://local/${uniq('x')}`));
          await fails(l.composer.join(h, id, undefined, m), 'PermissionDenied', `join ${id}`);
        }
        await fails(l.composer.handle(`executor://local/${uniq('x')}`, undefined, m), 'PermissionDenied', 'handle');
        const h = await ok(l.composer.join(await ok(l.composer.handle(`executor://local/${uniq('x')}`)), there));
        await fails(l.composer.commit(h, m), 'PermissionDenied', 'commit');
        // the refused calls changed nothing
        const el = await ok(l.stores.task.read(there));
        assert.equal(el.revision, 1);
        await fails(l.stores.task.read(absent), 'NotFound');
      } finally {
        await l.close();
      }
    },
  );
  add('check order: input shape, then location, then authorization, then state', async () => {
    const l = await o.factory({ stores: STORES, authorize: (p) => p !== 'mallory' });
    try {
      const m = { principal: 'mallory' };
      const there = task();
      await ok(l.stores.task.create({ id: there, spec }));
      const badKey = { rw: { '-bad': b('1') } };
      // shape before location, location before authorization, authorization before state
      await fails(l.stores.task.create({ id: 'task://nowhere/x', spec, ...badKey }, m), 'InvalidEntry');
      await fails(l.stores.task.create({ id: 'task://nowhere/x', spec }, m), 'UnknownLocation');
      await fails(l.stores.image.create({ id: `image://ro/${uniq()}` }, m), 'InvalidLocation');
      await fails(l.stores.task.create({ id: there, spec }, m), 'PermissionDenied');
      await fails(l.stores.task.create({ id: there, spec }), 'NameCollision');
      await fails(l.stores.task.update('task://nowhere/x', { '-bad': b('1') }, {}, m), 'InvalidEntry');
      await fails(l.stores.task.update('task://nowhere/x', { a: b('1') }, {}, m), 'UnknownLocation');
      await fails(l.stores.task.update(there, { a: b('1') }, { ifRevision: 7 }, m), 'PermissionDenied');
      await fails(l.stores.task.update(there, { a: b('1') }, { ifRevision: 7 }), 'Conflict');
      await fails(l.stores.task.read('task://nowhere/x', illTyped({ rw: 5 }), m), 'InvalidFilterSpec');
      await fails(l.stores.task.delete('task://nowhere/x', m), 'UnknownLocation');
      await fails(l.stores.task.list({ store: 'nowhere' }, m), 'UnknownLocation');
    } finally {
      await l.close();
    }
  });
  return cases;
};

const STORES_PD = [
  { kind: 'image', name: 'local' },
  { kind: 'volume', name: 'local' },
  { kind: 'task', name: 'local' },
  { kind: 'executor', name: 'local' },
] as const;
