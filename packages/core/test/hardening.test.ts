import { types } from 'node:util';
import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { describe, expect, test } from 'vitest';
import {
  asIs,
  decodeTaskSpec,
  describeId,
  ElementJsonC,
  eventMatches,
  isDataSource,
  isElementId,
  isLesslError,
  LesslError,
  makeId,
  matches,
  parseChecksum,
  parseId,
  project,
  promise,
  showValue,
  toId,
  unwrap,
  utf8,
  validateCreateMetadata,
  validateEventFilter,
  validateListFilter,
  validatePatch,
  validateReadFilter,
  type Element,
  type ErrorTag,
  type EventFilter,
  type IdLike,
  type LesslEvent,
  type ListFilter,
  type Metadata,
  type ReadFilter,
} from '@lessl/core';
import { hostile, hostileObject } from '../../conformance/src/hostile.js';

// HOSTILE_RUNS=20000 for a longer hunt.
const RUNS = { numRuns: Number(process.env.HOSTILE_RUNS ?? 1500) };
const ASYNC_RUNS = { numRuns: Math.ceil(RUNS.numRuns / 3) };
/** No input may wedge: one run of a property gets this long. */
const RUN_MS = 2000;

/** Wraps a property's predicate so a run that takes too long fails (with a counterexample) instead of hanging. */
const quick =
  <A extends unknown[]>(f: (...a: A) => void) =>
  (...a: A): void => {
    const t0 = performance.now();
    f(...a);
    expect(performance.now() - t0).toBeLessThan(RUN_MS);
  };
/** Whether Promises would look at `v`'s `then` (reading it may throw). */
const hasThen = (v: unknown): boolean => {
  if ((typeof v !== 'object' || v === null) && typeof v !== 'function') return false;
  try {
    return 'then' in v;
  } catch {
    return true;
  }
};
const PROTO_KEYS = ['constructor', 'toString', 'valueOf', 'hasOwnProperty'];

const element = (ro: Metadata = {}, rw: Metadata = {}): Element => {
  const id = parseId('image://local/a');
  if (E.isLeft(id)) throw new Error('bad id');
  return { id: id.right, ro, rw, revision: 1, created: 't', modified: 't', attributes: { size: 1 } };
};

/** Asserts `r` is an Either whose left (if any) is a lessl error with one of `tags`. */
const typed = (r: E.Either<unknown, unknown>, ...tags: ErrorTag[]): void => {
  if (E.isLeft(r)) {
    expect(isLesslError(r.left)).toBe(true);
    expect(tags).toContain((r.left as { _tag: ErrorTag })._tag);
  } else expect(r._tag).toBe('Right');
};

const leftTag = (r: E.Either<{ _tag: string }, unknown>): string | undefined => (E.isLeft(r) ? r.left._tag : undefined);

describe('keys named like Object.prototype members', () => {
  test('are valid metadata keys, with no false ReadOnlyKey on create or update', () => {
    const ro = utf8({ constructor: '1', toString: '2' });
    const rw = utf8({ valueOf: '3', hasOwnProperty: '4' });
    expect(E.isRight(validateCreateMetadata('x', ro, rw))).toBe(true);
    expect(E.isRight(validateCreateMetadata('x', {}, utf8({ constructor: 'c', toString: 't' })))).toBe(true);
    expect(E.isRight(validatePatch('x', utf8({ constructor: 'c', valueOf: 'v' }), {}))).toBe(true);
    expect(E.isRight(validatePatch('x', { hasOwnProperty: null }, utf8({ a: '1' })))).toBe(true);
  });

  test('byte values are answered as fresh copies: a trapping prototype or a later change cannot reach the registry', () => {
    const v = new Uint8Array([1, 2]);
    Object.setPrototypeOf(
      v,
      new Proxy(
        {},
        {
          get: () => {
            throw new Error('trap');
          },
        },
      ),
    );
    const c = validateCreateMetadata('x', { a: v }, {});
    const p = validatePatch('x', { b: v }, {});
    v[0] = 9;
    expect(E.isRight(c) && [...(c.right.ro.a ?? [])]).toEqual([1, 2]);
    expect(E.isRight(p) && Object.getPrototypeOf(p.right.b)).toBe(Uint8Array.prototype);
  });

  test('a real clash on such a key is still ReadOnlyKey', () => {
    const c = validateCreateMetadata('x', utf8({ constructor: '1' }), utf8({ constructor: '2' }));
    expect(E.isLeft(c) && c.left).toMatchObject({ _tag: 'ReadOnlyKey', keys: ['constructor'] });
    const p = validatePatch('x', utf8({ toString: '2' }), utf8({ toString: '1' }));
    expect(E.isLeft(p) && p.left).toMatchObject({ _tag: 'ReadOnlyKey', keys: ['toString'] });
  });

  test('__proto__ (an own key, as JSON.parse makes it) is InvalidEntry: the key syntax starts with a letter or digit', () => {
    const ro = JSON.parse('{"__proto__": 1}') as unknown;
    const r = validateCreateMetadata('x', ro, {});
    expect(E.isLeft(r) && r.left).toMatchObject({ _tag: 'InvalidEntry', keys: ['__proto__'] });
  });

  test('a filtered read never answers inherited members (functions) as metadata values', () => {
    const f = validateReadFilter('x', { keys: [...PROTO_KEYS, 'a'] });
    if (E.isLeft(f)) throw new Error(f.left.message);
    const p = project(element(utf8({ a: '1', valueOf: 'v' })), f.right);
    expect(Object.keys(p.ro).sort()).toEqual(['a', 'valueOf']);
    expect(Object.keys(p.rw)).toEqual([]);
    for (const v of [...Object.values(p.ro), ...Object.values(p.rw)]) expect(v).toBeInstanceOf(Uint8Array);
  });

  test('list filters on such keys match own keys only, without crashing', () => {
    const f = validateListFilter({ ro: { constructor: 'c' }, rw: { toString: 't' } });
    if (E.isLeft(f)) throw new Error(f.left.message);
    expect(matches(element(), f.right)).toBe(false);
    expect(matches(element(utf8({ constructor: 'c' }), utf8({ toString: 't' })), f.right)).toBe(true);
    expect(matches(element(utf8({ constructor: 'x' }), utf8({ toString: 't' })), f.right)).toBe(false);
  });

  test('env names like __proto__ and constructor survive task spec decoding as own keys', () => {
    const spec = JSON.parse('{"cmd": ["x"], "env": {"__proto__": "p", "constructor": "c", "toString": "t"}}') as unknown;
    const r = decodeTaskSpec('t', spec);
    if (E.isLeft(r)) throw new Error(r.left.message);
    const env = r.right.env ?? {};
    expect(Object.keys(env).sort()).toEqual(['__proto__', 'constructor', 'toString']);
    expect(Object.getOwnPropertyDescriptor(env, '__proto__')?.value).toBe('p');
  });

  test('element JSON with such keys decodes them as own keys, without touching prototypes', () => {
    const wire = JSON.parse(
      '{"id": "image://local/a", "ro": {"__proto__": "AQ==", "constructor": "Ag=="}, "rw": {}, "revision": 1,' +
        ' "created": "t", "modified": "t", "attributes": {}}',
    ) as unknown;
    const r = ElementJsonC.decode(wire);
    if (E.isLeft(r)) throw new Error('did not decode');
    expect(Object.getPrototypeOf(r.right.ro)).toBe(Object.prototype);
    expect(Object.keys(r.right.ro).sort()).toEqual(['__proto__', 'constructor']);
    expect(Object.keys(ElementJsonC.encode(r.right).ro).sort()).toEqual(['__proto__', 'constructor']);
  });
});

describe('IDs', () => {
  test.each([null, undefined, 7, {}, { key: 5 }, Symbol('s'), 10n])('toId(%s) is InvalidEntry, not a throw', (u) => {
    expect(leftTag(toId(u as IdLike))).toBe('InvalidEntry');
  });

  test('toId answers a fresh ID parsed from the key: an object cannot pose as one ID and name another', () => {
    const forged = { key: 'image://local/x', kind: 'volume', store: 'elsewhere', name: '../../etc' };
    expect(isElementId(forged)).toBe(false);
    const r = toId(forged as unknown as IdLike);
    expect(E.isRight(r) && r.right).toEqual({ kind: 'image', store: 'local', name: 'x', key: 'image://local/x' });
  });

  test('makeId with non-string parts is InvalidEntry', () => {
    expect(leftTag(makeId(Symbol('k'), {}, null))).toBe('InvalidEntry');
  });
});

describe('exact task specs', () => {
  const base = { cmd: ['x'] };
  test('unknown fields are InvalidEntry naming them, at the top and inside every object', () => {
    const r = decodeTaskSpec('t', {
      ...base,
      limit: { pids: 1 },
      limits: { pids: 1, memory: 5 },
      restart: { policy: 'never', retries: 2 },
      interaction: { stdinn: true },
      log: { destination: 'none', path: '/x' },
      credentials: [{ name: 'A', ref: 'r', value: 'secret' }],
    });
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    if (E.isRight(r)) return;
    const named = ['limit', 'limits.memory', 'restart.retries', 'interaction.stdinn', 'log.path', 'credentials.value'];
    expect([...r.left.keys].sort()).toEqual([...named].sort());
    for (const k of named) expect(r.left.message).toContain(k);
  });

  test('unknown and bad fields are reported together', () => {
    const r = decodeTaskSpec('t', { ...base, pwd: 'relative', extra: 1 });
    expect(E.isLeft(r) && [...r.left.keys].sort()).toEqual(['extra', 'pwd']);
  });

  test('env is a map: any valid name is accepted', () => {
    expect(E.isRight(decodeTaskSpec('t', { ...base, env: { ANY_NAME: 'v', other: 'w' } }))).toBe(true);
  });

  test('the decoded spec is a copy, read once: a getter that throws on its second read cannot fool it', () => {
    let reads = 0;
    const spec = Object.defineProperty({}, 'cmd', {
      enumerable: true,
      get: () => {
        if (reads++ > 0) throw new Error('second read');
        return ['x'];
      },
    });
    const r = decodeTaskSpec('t', spec);
    expect(E.isRight(r) && r.right).toEqual({ cmd: ['x'] });
    expect(E.isRight(r) && r.right === spec).toBe(false);
  });

  test('a huge sparse cmd is refused at once', () => {
    const cmd: unknown[] = [];
    cmd.length = 2 ** 32 - 1;
    expect(leftTag(decodeTaskSpec('t', { cmd }))).toBe('InvalidEntry');
  });
});

describe('no wedging on huge sparse arrays', () => {
  const huge = (): unknown[] => {
    const a: unknown[] = [];
    a.length = 2 ** 32 - 1;
    return a;
  };
  const ev: LesslEvent = { seq: 1, time: 't', type: 'created', id: 'image://local/a', revision: 1, detail: {} };
  test.each([
    ['project, keys', () => project(element(), { keys: huge() as string[] })],
    ['project, parts', () => project(element(), { parts: huge() as [] })],
    ['eventMatches', () => eventMatches({ types: huge() as [] }, ev)],
    ['eventMatches, id', () => eventMatches({ kinds: ['image'] }, { ...ev, id: huge() as unknown as string })],
    ['matches, namePrefix', () => matches(element(), { namePrefix: huge() as unknown as string })],
    ['validateListFilter', () => validateListFilter({ parts: huge() })],
    ['parseId', () => parseId(huge())],
  ])('%s answers at once', (_name, f) => {
    const t0 = performance.now();
    f();
    expect(performance.now() - t0).toBeLessThan(RUN_MS);
  });
});

describe('filters are validated copies', () => {
  test('a read filter is read once; later changes to the object passed in do not count', () => {
    const keys = ['a'];
    const f = validateReadFilter('x', { keys });
    keys.push('not valid!');
    expect(E.isRight(f) && f.right).toEqual({ keys: ['a'] });
  });

  test('a list filter whose getter throws on its second read is validated once', () => {
    let reads = 0;
    const f = Object.defineProperty({}, 'kind', {
      enumerable: true,
      get: () => (reads++ === 0 ? 'image' : { evil: true }),
    });
    const r = validateListFilter(f);
    expect(E.isRight(r) && r.right).toEqual({ kind: 'image' });
  });

  test('event filters: arrays of strings of known values, nothing else', () => {
    expect(E.isRight(validateEventFilter({ types: ['created'], kinds: ['image'], ids: ['x'], stores: ['local'] }))).toBe(true);
    expect(E.isRight(validateEventFilter(undefined))).toBe(true);
    for (const bad of [
      null,
      { types: null },
      { types: 'created' },
      { types: ['nope'] },
      { kinds: ['blob'] },
      { ids: [1] },
      { type: [] },
    ])
      expect(leftTag(validateEventFilter(bad))).toBe('InvalidFilterSpec');
  });
});

describe('the Promise façade', () => {
  test('promise() of a non-object never throws; its methods reject with InvalidEntry; awaiting it does not hang', async () => {
    const api = promise(null as unknown as { read: () => TE.TaskEither<never, number> });
    await expect(api.read()).rejects.toMatchObject({ tag: 'InvalidEntry' });
    await expect(Promise.resolve(api)).resolves.toBe(api);
  });

  test('a method that throws rejects with a LesslError', async () => {
    const api = promise({
      m: (): TE.TaskEither<never, number> => {
        throw new Error('boom');
      },
    });
    await expect(api.m()).rejects.toBeInstanceOf(LesslError);
  });

  test('a revoked target: methods reject with RuntimeError', async () => {
    const r = Proxy.revocable({ read: () => TE.right(1) }, {});
    r.revoke();
    await expect(promise(r.proxy).read()).rejects.toMatchObject({ tag: 'RuntimeError' });
  });

  test('unwrap of a left that is not a lessl error rejects with RuntimeError', async () => {
    await expect(unwrap(TE.left(new Error('x')) as never)).rejects.toMatchObject({ tag: 'RuntimeError' });
    await expect(unwrap(null as never)).rejects.toMatchObject({ tag: 'RuntimeError' });
  });
});

describe('the Promise façade and event sources', () => {
  test('the Promise façade hands a function marked asIs back instead of running it', async () => {
    let calls = 0;
    const off = asIs(() => void calls++);
    const api = promise({ subscribe: () => off }) as unknown as { subscribe: () => unknown };
    expect(api.subscribe()).toBe(off);
    expect(calls).toBe(0);
  });
});

describe('nothing throws, for any argument (fast-check, hostile input)', () => {
  const h2 = fc.tuple(hostile, hostile);
  const h3 = fc.tuple(hostile, hostile, hostile);

  test('IDs', () => {
    fc.assert(
      fc.property(
        h3,
        quick(([a, b, c]) => {
          typed(parseId(a.make()), 'InvalidEntry');
          typed(toId(b.make() as IdLike), 'InvalidEntry');
          typed(makeId(a.make(), b.make(), c.make()), 'InvalidEntry');
          expect(typeof describeId(c.make())).toBe('string');
          expect(typeof isElementId(a.make())).toBe('boolean');
        }),
      ),
      RUNS,
    );
  });

  test('metadata', () => {
    fc.assert(
      fc.property(
        h3,
        quick(([id, ro, rw]) => {
          typed(validateCreateMetadata(id.make() as string, ro.make(), rw.make()), 'InvalidEntry', 'ReadOnlyKey');
          typed(validatePatch(id.make() as string, rw.make(), ro.make() as Metadata), 'InvalidEntry', 'ReadOnlyKey');
        }),
      ),
      RUNS,
    );
  });

  test('metadata maps of hostile values', () => {
    fc.assert(
      fc.property(
        hostileObject,
        hostileObject,
        quick((ro, rw) => {
          typed(validateCreateMetadata('x', ro.make(), rw.make()), 'InvalidEntry', 'ReadOnlyKey');
        }),
      ),
      RUNS,
    );
  });

  test('read and list filters, project and matches', () => {
    fc.assert(
      fc.property(
        h2,
        hostileObject,
        quick(([id, f], o) => {
          typed(validateReadFilter(id.make() as string, f.make()), 'InvalidFilterSpec');
          typed(validateListFilter(f.make()), 'InvalidFilterSpec');
          typed(validateListFilter(o.make()), 'InvalidFilterSpec');
          expect(() => project(id.make() as Element, f.make() as ReadFilter)).not.toThrow();
          expect(() => project(element(), o.make() as ReadFilter)).not.toThrow();
          expect(typeof matches(id.make() as Element, f.make() as ListFilter)).toBe('boolean');
          expect(typeof matches(element(), o.make() as ListFilter)).toBe('boolean');
        }),
      ),
      RUNS,
    );
  });

  test('task specs', () => {
    fc.assert(
      fc.property(
        hostile,
        hostileObject,
        quick((u, o) => {
          typed(decodeTaskSpec('t', u.make()), 'InvalidEntry');
          const fields = ['limits', 'restart', 'interaction', 'log', 'env', 'credentials'].map((k) => [k, o.make()]);
          typed(decodeTaskSpec('t', { cmd: ['x'], ...Object.fromEntries(fields) }), 'InvalidEntry');
          typed(decodeTaskSpec('t', { cmd: [u.make()], credentials: [o.make()] }), 'InvalidEntry');
        }),
      ),
      RUNS,
    );
  });

  test('events, data sources, checksums', () => {
    fc.assert(
      fc.property(
        h2,
        quick(([a, b]) => {
          typed(validateEventFilter(a.make()), 'InvalidFilterSpec');
          expect(typeof eventMatches(a.make() as EventFilter, b.make() as LesslEvent)).toBe('boolean');
          expect(typeof isDataSource(a.make())).toBe('boolean');
          typed(parseChecksum('x', b.make()), 'UnsupportedChecksum');
        }),
      ),
      RUNS,
    );
  });

  test('unwrap rejects only with LesslError, whatever the TaskEither does', async () => {
    const rejectsTyped = async (p: Promise<unknown>): Promise<void> => {
      await p.then(
        () => undefined,
        (e: unknown) => expect(e).toBeInstanceOf(LesslError),
      );
    };
    await fc.assert(
      fc.asyncProperty(hostile, async (h) => {
        await rejectsTyped(unwrap(h.make() as never));
        await rejectsTyped(unwrap((() => h.make()) as never));
        // An async function adopts a thenable it returns, and one whose `then` never calls back
        // never settles: no callee can fix that, so that case is left out here.
        const v = h.make();
        if (!hasThen(v)) await rejectsTyped(unwrap((async () => v) as never));
        await rejectsTyped(unwrap(TE.left(h.make()) as never));
        await rejectsTyped(unwrap(TE.right(h.make())));
      }),
      ASYNC_RUNS,
    );
  });

  test('promise() façades never throw; their methods reject only with LesslError', async () => {
    await fc.assert(
      fc.asyncProperty(hostile, hostile, async (target, arg) => {
        const api = promise(target.make() as object) as Record<string | symbol, unknown>;
        for (const k of ['read', 'key', 'then', Symbol.iterator]) {
          const m = api[k];
          if (typeof m !== 'function' || k === 'then') continue;
          const out: unknown = (m as (a: unknown) => unknown)(arg.make());
          if (types.isPromise(out)) await out.catch((e: unknown) => expect(e).toBeInstanceOf(LesslError));
        }
      }),
      ASYNC_RUNS,
    );
  });

  // Known gap: showValue lives in errors.ts, which is being rewritten elsewhere. JSON.stringify and
  // Object.prototype.toString both throw on revoked Proxies (and on a throwing Symbol.toStringTag).
  // Flip to `test` once showValue falls back without throwing (as safeShow in core/src/safe.ts does).
  test('showValue never throws, revoked Proxies included', () => {
    fc.assert(
      fc.property(hostile, (h) => {
        expect(typeof showValue(h.make())).toBe('string');
      }),
      RUNS,
    );
  });
});
