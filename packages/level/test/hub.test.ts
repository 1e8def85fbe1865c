import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import { describe, expect, test } from 'vitest';
import { LesslError, type EventFilter, type LesslEvent } from '@lessl/core';
import { EventHub, Registry } from '@lessl/level';
import { hostile } from '../../conformance/src/hostile.js';

let n = 0;
/** Commits one `created` event for a fresh task ID and answers it once published. */
const publishOne = async (r: Registry): Promise<LesslEvent> => {
  const id = `task://local/t${++n}`;
  const [e] = await r.commit({ events: [{ type: 'created', id, revision: 1, detail: {} }] });
  if (e === undefined) throw new Error('no event');
  return e;
};

const boom = (): never => {
  throw new Error('hostile');
};

const revoked = (): object => {
  const p = Proxy.revocable({}, {});
  p.revoke();
  return p.proxy;
};

const invalidFilters: readonly [string, unknown][] = [
  ['types: null (as JSON has it)', { types: null }],
  ['types: a string', { types: 'created' }],
  ['an unknown type', { types: ['nope'] }],
  ['an unknown kind', { kinds: ['blob'] }],
  ['ids of numbers', { ids: [1] }],
  ['stores: an object', { stores: { local: true } }],
  ['an unknown field', { type: ['created'] }],
  ['null', null],
  ['a number', 7],
  ['a Proxy whose getters throw', new Proxy({}, { get: boom, ownKeys: boom, getOwnPropertyDescriptor: boom })],
  ['a revoked Proxy', revoked()],
  ['a throwing getter', Object.defineProperty({}, 'types', { get: boom, enumerable: true })],
];

describe('subscribe validates its filter', () => {
  test.each(invalidFilters)('%s: subscribeChecked answers InvalidFilterSpec', async (_name, f) => {
    const r = await Registry.open({ memory: true });
    const s = r.events.subscribeChecked(f as EventFilter, () => undefined);
    expect(E.isLeft(s) && s.left._tag).toBe('InvalidFilterSpec');
    await r.close();
  });

  test.each(invalidFilters)('%s: subscribe does not throw, subscribes nothing, and others still get events', async (_name, f) => {
    const r = await Registry.open({ memory: true });
    const bad: LesslEvent[] = [];
    const good: LesslEvent[] = [];
    const off = r.events.subscribe(f as EventFilter, (e) => bad.push(e));
    r.events.subscribe({}, (e) => good.push(e));
    await publishOne(r);
    expect(bad).toEqual([]);
    expect(good).toHaveLength(1);
    expect(() => off()).not.toThrow();
    await r.close();
  });

  test('a handler that is not a function is refused', async () => {
    const r = await Registry.open({ memory: true });
    const s = r.events.subscribeChecked({}, 'not a function' as unknown as (e: LesslEvent) => void);
    expect(E.isLeft(s) && s.left._tag).toBe('InvalidFilterSpec');
    await r.close();
  });

  test('valid filters still select', async () => {
    const r = await Registry.open({ memory: true });
    const got: unknown[] = [];
    const s = r.events.subscribeChecked({ types: ['created'], kinds: ['task'], stores: ['local'] }, (e) => got.push(e.id));
    expect(E.isRight(s)).toBe(true);
    r.events.subscribe({ kinds: ['image'] }, () => got.push('wrong'));
    const e = await publishOne(r);
    expect(got).toEqual([e.id]);
    await r.close();
  });

  test('the filter is copied at subscribe time: changes and traps afterwards do not count', async () => {
    const r = await Registry.open({ memory: true });
    const types: string[] = ['created'];
    let reads = 0;
    const flaky = Object.defineProperty({}, 'kinds', {
      enumerable: true,
      get: () => (reads++ === 0 ? ['task'] : boom()),
    });
    const a: LesslEvent[] = [];
    const b: LesslEvent[] = [];
    r.events.subscribe({ types } as EventFilter, (e) => a.push(e));
    r.events.subscribe(flaky as EventFilter, (e) => b.push(e));
    types.splice(0, 1, 'deleted');
    await publishOne(r);
    expect(a).toHaveLength(1);
    expect(b).toHaveLength(1);
    await r.close();
  });

  test('a throwing handler (and a throwing onHandlerError) never reaches the publisher or the others', () => {
    const hub = new EventHub(async () => [], 0, boom);
    const got: number[] = [];
    hub.subscribe({}, boom);
    hub.subscribe({}, (e) => got.push(e.seq));
    const e: LesslEvent = { seq: 1, time: 't', type: 'created', id: 'task://local/a', revision: 1, detail: {} };
    expect(() => hub.publish([e])).not.toThrow();
    expect(got).toEqual([1]);
    expect(hub.handlerErrors).toBe(1);
  });

  test('fuzz: hostile filters never throw, never reach the publisher, never stop the others', async () => {
    const r = await Registry.open({ memory: true });
    let good = 0;
    r.events.subscribe({}, () => good++);
    await fc.assert(
      fc.asyncProperty(hostile, async (h) => {
        const before = good;
        const s = r.events.subscribeChecked(h.make() as EventFilter, () => undefined);
        if (E.isLeft(s)) expect(s.left._tag).toBe('InvalidFilterSpec');
        const off = r.events.subscribe(h.make() as EventFilter, boom);
        await publishOne(r);
        expect(good).toBe(before + 1);
        off();
        if (E.isRight(s)) s.right();
      }),
      { numRuns: 300 },
    );
    await r.close();
  });
});

describe('stream validates its filter and options', () => {
  test.each(invalidFilters)('%s: the first next() rejects with InvalidFilterSpec', async (_name, f) => {
    const r = await Registry.open({ memory: true });
    const st = r.events.stream(f as EventFilter);
    const err = await st[Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LesslError);
    expect((err as LesslError).tag).toBe('InvalidFilterSpec');
    await r.close();
  });

  test.each([
    ['null', null],
    ['a revoked Proxy', revoked()],
    ['a throwing getter', Object.defineProperty({}, 'since', { get: boom, enumerable: true })],
    ['a signal that is not an AbortSignal', { signal: { aborted: false } }],
    ['a negative since', { since: -1 }],
  ])('options %s: the first next() rejects with InvalidEntry', async (_name, o) => {
    const r = await Registry.open({ memory: true });
    const st = r.events.stream({}, o as never);
    const err = await st[Symbol.asyncIterator]()
      .next()
      .catch((e: unknown) => e);
    expect((err as LesslError).tag).toBe('InvalidEntry');
    await r.close();
  });

  test('a valid filter still streams, replaying from since', async () => {
    const r = await Registry.open({ memory: true });
    const e = await publishOne(r);
    const st = r.events.stream({ ids: [e.id] }, { since: 0 });
    const it = st[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ id: e.id });
    st.close();
    await r.close();
  });
});
