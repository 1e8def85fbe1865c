/**
 * Retention over a real server on loopback (memory backend): deleted tasks, ended jobs, their
 * idempotency keys and old events go once their window has passed, and not before.
 */
import { afterEach, expect, test } from 'vitest';
import { LesslError } from '@lessl/core';
import type { Harness } from './helpers.js';
import { start } from './helpers.js';

type Json = Record<string, unknown>;
let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

/** Runs `n` one-shot tasks to their end (each with an Idempotency-Key), then deletes them. */
const runAndDelete = async (x: Harness, n: number): Promise<void> => {
  for (let i = 0; i < n; i++) {
    const r = await x.call('/v1/tasks?wait=10', {
      method: 'POST',
      json: { image: 'busybox', cmd: [`echo ${i}`] },
      headers: { 'idempotency-key': `k-${i}` },
    });
    expect(r.status).toBe(201);
    const t = (await r.json()) as Json;
    expect((await x.call(`/v1/tasks/${String(t.id)}`, { method: 'DELETE' })).status).toBe(204);
  }
};

/** The first event a replay from `since` answers, or its error. */
const firstReplayed = async (x: Harness, since: number): Promise<number | LesslError> => {
  const s = x.server.backend.events.stream({}, { since });
  try {
    const r = await s[Symbol.asyncIterator]().next();
    return r.done === true ? -1 : r.value.seq;
  } catch (e) {
    return e as LesslError;
  } finally {
    s.close();
  }
};

test('past the retention windows, deleted tasks, their jobs, idempotency keys and old events are gone', async () => {
  h = await start({ retention: { tasks: 0, jobs: 0, events: 0 } });
  await runAndDelete(h, 5);
  expect(h.server.db.tasks.size).toBe(5); // tombstones until the retention pass
  const last = h.registry.lastSeq();

  const pruned = await h.server.prune();
  expect(pruned.tasks).toBe(5);
  expect(pruned.jobs).toBe(5);
  expect(h.server.db.tasks.size).toBe(0);
  expect(h.server.db.jobs.size).toBe(0);
  expect(h.server.db.idempotency.size).toBe(0);
  // the log keeps only its newest event; a replay from before it answers a typed error
  expect(pruned.events).toBe(last - 1);
  expect((await h.registry.readEvents(0, last, 10)).map((e) => e.seq)).toEqual([last]);
  const err = await firstReplayed(h, 0);
  expect(err instanceof LesslError && err.tag === 'InvalidEntry' && err.error.keys).toEqual(['since']);
  expect(await firstReplayed(h, last - 1)).toBe(last);
  // over SSE, a Last-Event-ID before retention ends the stream with an error event naming since
  const sse = await h.call('/v1/events', { token: h.tokens.admin, headers: { 'last-event-id': '0' } });
  const text = await sse.text();
  expect(text).toMatch(/event: error\ndata: .*"InvalidEntry"/);
  expect(text).toMatch(/"keys":\["since"\]/);
  // the registry holds no element of a deleted task: only the image
  expect(h.registry.all().map((e) => e.id.key)).toEqual(['image://local/busybox']);
  // a task's ID past retention is unknown; the service goes on (seqs continue)
  await runAndDelete(h, 1);
  expect(h.registry.lastSeq()).toBeGreaterThan(last);
});

test('within the retention windows nothing is removed', async () => {
  h = await start({ retention: { tasks: 3600, jobs: 3600, events: 3600 } });
  await runAndDelete(h, 3);
  const last = h.registry.lastSeq();
  expect(await h.server.prune()).toEqual({ tasks: 0, jobs: 0, events: 0 });
  expect(h.server.db.tasks.size).toBe(3);
  expect(h.server.db.idempotency.size).toBe(3);
  expect(await firstReplayed(h, 0)).toBe(1);
  expect((await h.registry.readEvents(0, last, last + 1)).length).toBe(last);
  // DELETE of a kept tombstone stays idempotent
  const id = [...h.server.db.tasks.keys()][0] as string;
  expect((await h.call(`/v1/tasks/${id}`, { method: 'DELETE' })).status).toBe(204);
});

test('retention windows and durability are checked: a bad one fails the start with InvalidEntry naming it', async () => {
  for (const [opts, keys] of [
    [{ retention: { tasks: -1 } }, ['retention', 'tasks']],
    [{ retention: { events: '7d' } }, ['retention', 'events']],
    [{ retention: { forever: 1 } }, ['retention', 'forever']],
    [{ durability: 'fsync' }, ['durability']],
  ] as const) {
    const e = await start(opts as never).catch((err: unknown) => err);
    expect(e instanceof LesslError && e.tag === 'InvalidEntry' && e.error.keys).toEqual(keys);
  }
});
