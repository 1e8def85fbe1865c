// The record door: the one way a backend's own code changes records (amend, hold, forget, announce).
import { expect, test } from 'vitest';
import type { Element, LesslEvent } from '@lessl/core';
import { recordDoor } from '@lessl/kit';
import { Registry } from '@lessl/level';

const el = (key: string): Element => ({
  id: { kind: 'image', store: 'local', name: key.slice('image://local/'.length), key },
  ro: {},
  rw: {},
  revision: 1,
  created: '2026-01-01T00:00:00.000Z',
  modified: '2026-01-01T00:00:00.000Z',
  attributes: { imageId: 'sha256:a' },
});

const opened = async (): Promise<{ reg: Registry; seen: LesslEvent[] }> => {
  const reg = await Registry.open({ memory: true });
  await reg.commit({ put: [el('image://local/a')] });
  const seen: LesslEvent[] = [];
  reg.events.subscribe({}, (e) => seen.push(e));
  return { reg, seen };
};

test('amend without an event keeps the revision and publishes nothing; with one, the revision goes up with its event', async () => {
  const { reg, seen } = await opened();
  const door = recordDoor(reg);
  const quiet = await door.amend('image://local/a', (cur) => ({ ...cur.attributes, lastUsed: 'now' }));
  expect(quiet?.revision).toBe(1);
  expect(reg.get('image://local/a')?.attributes).toEqual({ imageId: 'sha256:a', lastUsed: 'now' });
  const loud = await door.amend('image://local/a', () => ({ imageId: 'sha256:b' }), {
    type: 'modified',
    detail: { refreshed: true },
  });
  expect(loud?.revision).toBe(2);
  expect(seen.map((e) => [e.type, e.id.key, e.revision, e.detail])).toEqual([
    ['modified', 'image://local/a', 2, { refreshed: true }],
  ]);
  expect(await door.amend('image://local/gone', () => ({}))).toBeUndefined();
  expect(await door.amend('image://local/a', () => undefined)).toBeUndefined();
  await reg.close();
});

test('hold runs backend work between the read and the write under the lock; without waiting it answers undefined on a held lock', async () => {
  const { reg } = await opened();
  const door = recordDoor(reg);
  const order: string[] = [];
  const first = door.hold('image://local/a', async (cur, write) => {
    order.push(`read ${String(cur?.attributes.imageId)}`);
    await new Promise((r) => setTimeout(r, 20));
    await write({ imageId: 'sha256:c' });
    order.push('wrote');
  });
  expect(await door.hold('image://local/a', async () => 'ran', { wait: false })).toBeUndefined();
  const second = door.amend('image://local/a', (cur) => {
    order.push(`amend saw ${String(cur.attributes.imageId)}`);
    return undefined;
  });
  await Promise.all([first, second]);
  expect(order).toEqual(['read sha256:a', 'wrote', 'amend saw sha256:c']);
  expect(await door.hold('image://local/a', async () => 'ran', { wait: false })).toBe('ran');
  await reg.close();
});

test('forget removes the record with a deleted event; announce publishes an event about no element', async () => {
  const { reg, seen } = await opened();
  const door = recordDoor(reg);
  await door.forget('image://local/a', 'vanished');
  await door.announce({ type: 'host', id: 'host://h1', revision: 0, detail: { state: 'down' } });
  expect(reg.get('image://local/a')).toBeUndefined();
  expect(seen.map((e) => [e.type, e.id.key, e.detail])).toEqual([
    ['deleted', 'image://local/a', { reason: 'vanished' }],
    ['host', 'host://h1', { state: 'down' }],
  ]);
  await reg.close();
});
