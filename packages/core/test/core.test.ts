import fc from 'fast-check';
import * as E from 'fp-ts/lib/Either.js';
import * as TE from 'fp-ts/lib/TaskEither.js';
import { describe, expect, test } from 'vitest';
import {
  decodeExecutorOptions,
  decodeTaskSpec,
  ElementIdC,
  ElementJsonC,
  elementToJson,
  formatId,
  isLesslError,
  LesslError,
  notFound,
  parseChecksum,
  parseId,
  promise,
  sha256,
  unwrap,
  utf8,
  validateCreateMetadata,
  validateListFilter,
  validatePatch,
  validateReadFilter,
  type Element,
  eventFromJson,
  eventMatches,
  eventToJson,
  isElementId,
  validateEventFilter,
  type LesslEvent,
} from '@lessl/core';
import * as t from 'io-ts';

describe('ids', () => {
  test('parse and format round-trip', () => {
    const r = parseId('volume://nfs1/home');
    expect(E.isRight(r) && r.right).toMatchObject({ kind: 'volume', store: 'nfs1', name: 'home', key: 'volume://nfs1/home' });
    if (E.isRight(r)) expect(formatId(r.right)).toBe('volume://nfs1/home');
    expect(E.isRight(parseId('image://local/library/busybox:1.36'))).toBe(true);
  });
  test.each([
    '',
    'image:/local/x',
    'image://local/',
    'blob://local/x',
    'image://LOCAL/x',
    'image://local/a/../b',
    'image://local//x',
    'image:///x',
  ])('rejects %j with InvalidEntry', (s) => {
    const r = parseId(s);
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
  });
  test('hostile input (fuzz counterexample { toString: false }) is InvalidEntry, not a throw', () => {
    const hostile = { toString: false };
    const r = parseId(hostile);
    expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
    const f = validateListFilter({ kind: hostile, parts: [hostile] });
    expect(E.isLeft(f) && f.left._tag).toBe('InvalidFilterSpec');
    const c = parseChecksum('x', hostile);
    expect(E.isLeft(c) && c.left._tag).toBe('UnsupportedChecksum');
  });
  test('the io-ts codec decodes strings and encodes back', () => {
    const d = ElementIdC.decode('task://local/t1');
    expect(E.isRight(d) && ElementIdC.encode(d.right)).toBe('task://local/t1');
    expect(E.isLeft(ElementIdC.decode(7))).toBe(true);
  });
  test('fuzz: parseId never throws, and what it accepts round-trips', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.anything()), (u) => {
        const r = parseId(u);
        if (E.isRight(r)) expect(formatId(r.right)).toBe(u);
        else expect(r.left._tag).toBe('InvalidEntry');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('metadata rules', () => {
  test('nil values on create are InvalidEntry; ro/rw overlap is ReadOnlyKey', () => {
    const a = validateCreateMetadata('x', { k: null }, {});
    expect(E.isLeft(a) && a.left).toMatchObject({ _tag: 'InvalidEntry', keys: ['k'] });
    const b = validateCreateMetadata('x', utf8({ k: '1' }), utf8({ k: '2' }));
    expect(E.isLeft(b) && b.left).toMatchObject({ _tag: 'ReadOnlyKey', keys: ['k'] });
  });
  test('a null in a patch deletes; ro keys are refused', () => {
    const p = validatePatch('x', { a: null, b: new Uint8Array([1]) }, {});
    expect(E.isRight(p) && p.right).toEqual({ a: null, b: new Uint8Array([1]) });
    const q = validatePatch('x', { a: null }, utf8({ a: '1' }));
    expect(E.isLeft(q) && q.left._tag).toBe('ReadOnlyKey');
  });
  test('fuzz: metadata validation never throws and only answers InvalidEntry or ReadOnlyKey', () => {
    fc.assert(
      fc.property(fc.anything(), fc.anything(), (ro, rw) => {
        const r = validateCreateMetadata('x', ro, rw);
        if (E.isLeft(r)) expect(['InvalidEntry', 'ReadOnlyKey']).toContain(r.left._tag);
        const p = validatePatch('x', rw, {});
        if (E.isLeft(p)) expect(p.left._tag).toBe('InvalidEntry');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('filters', () => {
  test('fuzz: filter validation never throws', () => {
    fc.assert(
      fc.property(fc.anything(), (f) => {
        const a = validateReadFilter('x', f);
        const b = validateListFilter(f);
        if (E.isLeft(a)) expect(a.left._tag).toBe('InvalidFilterSpec');
        if (E.isLeft(b)) expect(b.left._tag).toBe('InvalidFilterSpec');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('task spec', () => {
  test('a full spec decodes; credentials are references', () => {
    const r = decodeTaskSpec('task://local/t', {
      version: '1.0',
      cmd: ['python', 'hello.py'],
      env: { KEY: 'value' },
      pwd: '/opt',
      user: '1000:1000',
      log: { destination: 'buffer' },
      credentials: [{ name: 'TOKEN', ref: 'vault:tokens/ci' }],
      limits: { memoryBytes: 64 << 20, cpus: 0.5, pids: 64, deadlineMs: 5000, outputBytes: 1 << 20 },
      restart: { policy: 'on-failure', maxRetries: 3 },
      interaction: { stdin: false, tty: false },
      daemon: true,
    });
    expect(E.isRight(r)).toBe(true);
  });
  test('a restart policy on a one-shot task is InvalidEntry naming restart; never is fine', () => {
    const r = decodeTaskSpec('t', { cmd: ['x'], restart: { policy: 'always' } });
    expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual(['restart']);
    expect(E.isRight(decodeTaskSpec('t', { cmd: ['x'], restart: { policy: 'never' } }))).toBe(true);
    expect(E.isRight(decodeTaskSpec('t', { cmd: ['x'], daemon: true, restart: { policy: 'on-failure' } }))).toBe(true);
  });
  test('bad fields are named', () => {
    const r = decodeTaskSpec('t', { cmd: ['x'], pwd: 'relative', env: { 'BAD-NAME': 'v' }, limits: { pids: 0 } });
    expect(E.isLeft(r) && [...r.left.keys].sort()).toEqual(['env', 'limits.pids', 'pwd']);
  });
  test('fuzz: decodeTaskSpec never throws', () => {
    fc.assert(
      fc.property(fc.anything(), (u) => {
        const r = decodeTaskSpec('t', u);
        if (E.isLeft(r)) expect(r.left._tag).toBe('InvalidEntry');
      }),
      { numRuns: 2000 },
    );
  });
});

describe('checksums and element codec', () => {
  test('sha256 parses; other algorithms are UnsupportedChecksum', () => {
    expect(E.isRight(parseChecksum('x', sha256(new Uint8Array([1]))))).toBe(true);
    const r = parseChecksum('x', 'md5:00');
    expect(E.isLeft(r) && r.left._tag).toBe('UnsupportedChecksum');
  });
  test('element JSON round-trips bytes', () => {
    const id = parseId('image://local/a');
    if (E.isLeft(id)) throw new Error('bad id');
    const el: Element = {
      id: id.right,
      ro: { k: new Uint8Array([0, 255, 7]) },
      rw: {},
      revision: 3,
      created: 't',
      modified: 't',
      attributes: { size: 3 },
    };
    const back = ElementJsonC.decode(JSON.parse(JSON.stringify(elementToJson(el))));
    expect(E.isRight(back) && back.right).toEqual(el);
  });
});

describe('promise facade', () => {
  test('unwrap resolves rights and rejects lefts with LesslError carrying the tag', async () => {
    await expect(unwrap(TE.right(5))).resolves.toBe(5);
    const err = await unwrap(TE.left(notFound('image://local/x'))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LesslError);
    expect((err as LesslError).tag).toBe('NotFound');
    expect(isLesslError((err as LesslError).error)).toBe(true);
  });
  test('promise() wraps TaskEither methods', async () => {
    const api = promise({ get: (n: number) => (n > 0 ? TE.right(n * 2) : TE.left(notFound('x'))), plain: 3 });
    await expect(api.get(2)).resolves.toBe(4);
    await expect(api.get(0)).rejects.toMatchObject({ tag: 'NotFound' });
    expect(api.plain).toBe(3);
  });
});

describe('executor options', () => {
  const backend = t.partial({ capAdd: t.array(t.string) });
  test('exact: unknown fields, at the top level and in backend, are InvalidEntry naming them', () => {
    const r = decodeExecutorOptions(
      'x',
      { memoryBytes: 1 << 20, memory: 5, backend: { capAdd: ['NET_RAW'], cap_add: [] } },
      backend,
    );
    expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && [...r.left.keys].sort()).toEqual([
      'options.backend.cap_add',
      'options.memory',
    ]);
  });
  test('wrong types are named; good options decode to a copy; none is {}', () => {
    const r = decodeExecutorOptions('x', { cpus: -1, readOnlyRootfs: 'yes', backend: { capAdd: 'ALL' } }, backend);
    expect(E.isLeft(r) && [...r.left.keys].sort()).toEqual(['options.backend.capAdd', 'options.cpus', 'options.readOnlyRootfs']);
    const o = { network: 'none', pids: 10, backend: { capAdd: ['CHOWN'] } };
    const ok = decodeExecutorOptions('x', o, backend);
    expect(E.isRight(ok) && ok.right).toEqual(o);
    expect(E.isRight(ok) && ok.right !== o).toBe(true);
    expect(decodeExecutorOptions('x', undefined, backend)).toEqual(E.right({}));
    const bad = decodeExecutorOptions('x', 'fast', backend);
    expect(E.isLeft(bad) && bad.left.keys).toEqual(['options']);
  });
});

describe('IDs in one form', () => {
  test('an ElementId serialises to its key; events convert to and from their JSON form; filters take either form', () => {
    const id = parseId('task://local/t');
    const x = parseId('executor://local/x');
    if (E.isLeft(id) || E.isLeft(x)) throw new Error('parse');
    expect(JSON.stringify({ id: id.right })).toBe('{"id":"task://local/t"}');
    expect(`${String(id.right)}`).toBe('task://local/t');
    expect({ ...id.right }).toEqual({ kind: 'task', store: 'local', name: 't', key: 'task://local/t' });
    const e: LesslEvent = { seq: 1, time: 't', type: 'bound', id: id.right, revision: 2, detail: { executor: x.right, run: 1 } };
    const j = eventToJson(e);
    expect(j).toEqual({
      seq: 1,
      time: 't',
      type: 'bound',
      id: 'task://local/t',
      revision: 2,
      detail: { executor: 'executor://local/x', run: 1 },
    });
    const back = eventFromJson(JSON.parse(JSON.stringify(j)));
    expect(back).toEqual(e);
    expect(isElementId(back?.id) && isElementId(back.detail.executor)).toBe(true);
    expect(eventFromJson({ nope: 1 })).toBeUndefined();
    const f = validateEventFilter({ ids: [id.right, 'task://local/other'] });
    expect(E.isRight(f) && f.right.ids).toEqual(['task://local/t', 'task://local/other']);
    expect(E.isRight(f) && eventMatches(f.right, e)).toBe(true);
    expect(E.isLeft(validateEventFilter({ ids: [{ key: 1 }] }))).toBe(true);
    const lf = validateListFilter({ parent: x.right });
    expect(E.isRight(lf) && lf.right.parent).toBe('executor://local/x');
    expect(E.isLeft(validateListFilter({ parent: { key: 'nope' } }))).toBe(true);
  });
});
