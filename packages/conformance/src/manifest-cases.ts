/**
 * Manifest cases: the backend's capability manifest (`Backend.supports`) is complete and honest.
 * What it claims works; what it denies is refused and leaves nothing behind, where that can be
 * checked on any backend (data, parents); exec into a running executor is run when claimed.
 */
import * as E from 'fp-ts/lib/Either.js';
import { sha256, text } from '@lessl/core';
import { CAPABILITY_NAMES, capabilitiesOf, needs } from './capabilities.js';
import { assert, fails, ok, run, sh, smallTar, uniq } from './harness.js';
import type { Case, ImageData, SuiteOptions, TestBackend } from './types.js';

/** A new image ID. */
const img = (): string => `image://local/${uniq('img')}`;

/** Data of both kinds is stored (checksum recorded); or refused with Unsupported, and nothing is created. */
const dataHonest = async (o: SuiteOptions, l: TestBackend, data: ImageData): Promise<void> => {
  const image = { id: img(), data: await data() };
  const volume = { id: `volume://local/${uniq('vol')}`, data: await smallTar() };
  if (capabilitiesOf(o, l).data) {
    const el = await ok(l.stores.image.create({ ...image, checksum: sha256(image.data) }), 'create an image with data');
    assert.equal(el.checksum, sha256(image.data));
    await ok(l.stores.volume.create(volume), 'create a volume with data');
    return;
  }
  await fails(l.stores.image.create(image), 'Unsupported', 'an image with data, on a backend without data');
  await fails(l.stores.volume.create(volume), 'Unsupported', 'a volume with data, on a backend without data');
  await fails(l.stores.image.read(image.id), 'NotFound');
  await fails(l.stores.volume.read(volume.id), 'NotFound');
};

/** A child of each kind names its parent; or a create with a parent is refused, and nothing is created. */
const parentsHonest = async (o: SuiteOptions, l: TestBackend, data: ImageData): Promise<void> => {
  const caps = capabilitiesOf(o, l);
  const content = caps.data ? { data: await data() } : {};
  const pairs = [
    { store: l.stores.image, parent: img(), child: img(), content },
    { store: l.stores.volume, parent: `volume://local/${uniq('vol')}`, child: `volume://local/${uniq('vol')}`, content: {} },
  ];
  for (const p of pairs) {
    await ok(p.store.create({ id: p.parent, ...p.content }), `create ${p.parent}`);
    const r = await run(p.store.create({ id: p.child, parent: p.parent, ...p.content }));
    if (caps.parents) {
      assert.ok(E.isRight(r), `a child of ${p.parent}: ${JSON.stringify(r)}`);
      assert.equal(r.right.parent?.key, p.parent);
      continue;
    }
    assert.ok(E.isLeft(r), `supports.parents is false, yet a child of ${p.parent} was created`);
    assert.ok(['Unsupported', 'InvalidParent'].includes(r.left._tag), `${r.left._tag}: ${r.left.message}`);
    await fails(p.store.read(p.child), 'NotFound');
  }
};

/** A task bound into an executor whose main task runs, runs beside it to its end. */
const execIntoRunning = async (l: TestBackend, data: ImageData): Promise<void> => {
  const image = img();
  await ok(l.stores.image.create({ id: image, data: await data() }), 'create the image');
  const [main, side] = [`task://local/${uniq('main')}`, `task://local/${uniq('side')}`];
  await ok(l.stores.task.create({ id: main, spec: sh('sleep 30') }));
  await ok(l.stores.task.create({ id: side, spec: sh('echo beside') }));
  const h0 = await ok(l.composer.join(await ok(l.composer.handle(`executor://local/${uniq('x')}`)), image));
  const first = await ok(l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(h0, main)), main))));
  assert.ok(first.committed, 'the main task starts');
  const second = await ok(l.composer.commit(await ok(l.composer.bind(await ok(l.composer.join(first.handle, side)), side))));
  assert.ok(second.committed, `a task bound into the running executor starts: ${JSON.stringify(second)}`);
  const r = await ok(l.tasks.wait(side));
  assert.deepEqual([r.exitCode, text(r.stdout)], [0, 'beside\n']);
  assert.equal((await ok(l.tasks.status(main))).state, 'running', 'the main task runs on');
  await ok(l.tasks.kill(main, { signal: 'KILL' }));
};

export const manifestCases = (o: SuiteOptions, data: ImageData): Case[] => [
  {
    name: 'manifest: the backend answers every capability, each a boolean',
    fn: async (l) => {
      if (l.supports === undefined) return; // a backend from before the manifest: the deprecated option stands in
      assert.deepEqual(Object.keys(l.supports).sort(), [...CAPABILITY_NAMES].sort());
      for (const [k, v] of Object.entries(l.supports)) assert.equal(typeof v, 'boolean', `supports.${k}`);
    },
  },
  {
    name: 'manifest: data: claimed, images and volumes take data; denied, a create with data is Unsupported',
    fn: (l) => dataHonest(o, l, data),
  },
  {
    name: 'manifest: parents: claimed, a child names its parent; denied, a create with a parent is refused',
    fn: (l) => parentsHonest(o, l, data),
  },
  needs(o, 'execIntoRunning', {
    name: 'manifest: execIntoRunning: a task bound into a running executor runs beside its main task',
    fn: (l) => execIntoRunning(l, data),
  }),
];
