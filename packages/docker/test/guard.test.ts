/**
 * The call guard and the labels module on their own (no engine): bounds, per-call observation,
 * engine-tagged errors, caller aborts; label sets and the filters and predicates that read them.
 */
import { PassThrough } from 'node:stream';
import { describe, expect, test } from 'vitest';
import type { Call } from '../src/client/index.js';
import { CallGuard } from '../src/guard.js';
import {
  elementFilter,
  executorLabels,
  helperLabels,
  isExecutorOf,
  isHelperOf,
  labelsFor,
  ownedFilter,
  poolLabels,
  readLabels,
} from '../src/labels.js';
import { mergeFilters } from '../src/client/filters.js';

const call = <A>(run: Call<A>['run'], o: Partial<Call<A>> = {}): Call<A> => ({ what: 'GET /x', bound: 'bounded', run, ...o });

/** A guard and what its observer heard. */
const guarded = (ms = 50): { guard: CallGuard; heard: boolean[] } => {
  const heard: boolean[] = [];
  const guard = new CallGuard(ms, 'h1 (unix:///h1.sock)');
  guard.observe = (reached) => heard.push(reached);
  return { guard, heard };
};

const refused = (): Error => Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });

describe('the call guard', () => {
  test('a call that answers is observed as reaching the engine', async () => {
    const { guard, heard } = guarded();
    expect(await guard.run(call(async () => 7))).toBe(7);
    expect(heard).toEqual([true]);
  });

  test('a call that does not answer within the bound is aborted and fails ETIMEDOUT naming the engine and the call', async () => {
    const { guard, heard } = guarded(30);
    let aborted = false;
    const hang = (signal: AbortSignal | undefined): Promise<never> =>
      new Promise((_, reject) => signal?.addEventListener('abort', () => ((aborted = true), reject(new Error('aborted')))));
    const err: unknown = await guard.run(call(hang)).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ETIMEDOUT', endpoint: 'h1 (unix:///h1.sock)' });
    expect(String(err)).toContain('did not answer GET /x within 30 ms');
    expect(aborted).toBe(true);
    expect(heard).toEqual([false]);
  });

  test('a call that ignores its signal still fails at the bound', async () => {
    const { guard } = guarded(30);
    const err: unknown = await guard.run(call(() => new Promise<never>(() => undefined))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ETIMEDOUT' });
  });

  test('an open call (upload, wait, events) is not bounded', async () => {
    const { guard, heard } = guarded(20);
    const slow = (): Promise<string> => new Promise((r) => setTimeout(() => r('done'), 60));
    expect(await guard.run(call(slow, { bound: 'open' }))).toBe('done');
    expect(heard).toEqual([true]);
  });

  test('a connection failure is tagged with the engine and counted; an engine error reached it', async () => {
    const { guard, heard } = guarded();
    const err: unknown = await guard.run(call(() => Promise.reject(refused()))).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ECONNREFUSED', endpoint: 'h1 (unix:///h1.sock)' });
    const notFound = Object.assign(new Error('no such container'), { statusCode: 404 });
    await guard.run(call(() => Promise.reject(notFound))).catch(() => undefined);
    expect(heard).toEqual([false, true]);
  });

  test("a call its caller abandoned says nothing about the engine, and the caller's abort reaches the request", async () => {
    const { guard, heard } = guarded(1000);
    const ac = new AbortController();
    const p = guard.run(
      call(
        (signal) =>
          new Promise<never>((_, reject) =>
            signal?.addEventListener('abort', () => reject(Object.assign(refused(), { code: 'ECONNRESET' }))),
          ),
        { signal: ac.signal },
      ),
    );
    ac.abort();
    await expect(p).rejects.toMatchObject({ code: 'ECONNRESET' });
    expect(heard).toEqual([]);
  });

  test("a stream that started keeps answering its caller's abort until it closes", async () => {
    const { guard } = guarded(1000);
    const ac = new AbortController();
    let inner: AbortSignal | undefined;
    const s = await guard.run(
      call(
        async (signal) => {
          inner = signal;
          return new PassThrough();
        },
        { signal: ac.signal },
      ),
    );
    ac.abort();
    expect(inner?.aborted).toBe(true);
    s.destroy();
  });
});

describe('labels', () => {
  const id = { kind: 'image', store: 'local', name: 'base', key: 'image://local/base' } as const;

  test('each kind of object gets its label set, and readLabels reads it back', () => {
    expect(labelsFor('r1', id, { team: new TextEncoder().encode('infra') })).toEqual({
      'lessl.id': 'image://local/base',
      'lessl.registry': 'r1',
      'lessl.ro.team': 'infra',
    });
    expect(readLabels(executorLabels('r1', 'executor://local/x', 'task://local/t'))).toMatchObject({
      registry: 'r1',
      owner: 'executor://local/x',
      task: 'task://local/t',
    });
    expect(isHelperOf(helperLabels('r1', 'image://local/base'), 'r1')).toBe(true);
    expect(isHelperOf(helperLabels('r1', 'image://local/base'), 'r2')).toBe(false);
    expect(isExecutorOf(poolLabels('r1', 'p'), 'r1')).toBe(true);
    expect(isExecutorOf(labelsFor('r1', id), 'r1')).toBe(false);
    expect(readLabels(undefined).registry).toBeUndefined();
  });

  test('filters: a registry label joined with a caller filter', () => {
    expect(mergeFilters(ownedFilter('r1'), { label: ['lessl.pool'], volume: ['v'] })).toEqual({
      label: ['lessl.registry=r1', 'lessl.pool'],
      volume: ['v'],
    });
    expect(elementFilter('r1', 'volume://local/v')).toEqual({ label: ['lessl.id=volume://local/v', 'lessl.registry=r1'] });
  });
});
