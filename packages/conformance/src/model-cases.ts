/**
 * Property-based cases (fast-check): random operation sequences against a simple model, and
 * fuzzing of the store entry points (they answer typed errors, never throw).
 */
import fc from 'fast-check';
import { ERROR_TAGS, isLesslError } from '@lessl/core';
import { assert, b, s, uniq } from './harness.js';
import { illTyped } from './hostile.js';
import type { Case, SuiteOptions, TestBackend } from './types.js';

type Op =
  | { op: 'create'; n: number; ro: Record<string, string>; rw: Record<string, string> }
  | { op: 'update'; n: number; patch: Record<string, string | null>; ifRevision?: number }
  | { op: 'delete'; n: number }
  | { op: 'read'; n: number };

// Keys named like Object.prototype members are valid metadata keys: the model checks own keys only.
const key = fc.constantFrom('a', 'b', 'c', 'd', 'constructor', 'toString', 'valueOf', 'hasOwnProperty');
const val = fc.string({ maxLength: 4 });
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant('create' as const),
    n: fc.nat(3),
    ro: fc.dictionary(key, val, { maxKeys: 2 }),
    rw: fc.dictionary(key, val, { maxKeys: 2 }),
  }),
  fc.record(
    {
      op: fc.constant('update' as const),
      n: fc.nat(3),
      patch: fc.dictionary(key, fc.option(val, { nil: null }), { maxKeys: 3 }),
      ifRevision: fc.nat(4),
    },
    { requiredKeys: ['op', 'n', 'patch'] },
  ),
  fc.record({ op: fc.constant('delete' as const), n: fc.nat(3) }),
  fc.record({ op: fc.constant('read' as const), n: fc.nat(3) }),
);

interface ModelEl {
  ro: Record<string, string>;
  rw: Record<string, string>;
  revision: number;
}

const enc = (m: Record<string, string>): Record<string, Uint8Array> =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [k, b(v)]));
const encP = (m: Record<string, string | null>): Record<string, Uint8Array | null> =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [k, v === null ? null : b(v)]));
const dec = (m: Record<string, Uint8Array>): Record<string, string> =>
  Object.fromEntries(Object.entries(m).map(([k, v]) => [k, s(v) ?? '']));

export const modelCases = (o: SuiteOptions): Case[] => {
  const spec = o.fixtures?.taskSpec ?? { cmd: ['sleep', '3600'] };
  const runs = o.propertyRuns ?? 40;
  return [
    {
      name: 'property: random create/update/delete/read sequences agree with a model',
      fn: async (l: TestBackend) => {
        await fc.assert(
          fc.asyncProperty(fc.array(opArb, { maxLength: 25 }), async (ops) => {
            const stem = uniq('pm');
            const model = new Map<number, ModelEl>();
            const id = (n: number): string => `task://local/${stem}-${n}`;
            for (const op of ops) {
              const m = model.get(op.n);
              if (op.op === 'create') {
                const r = await l.stores.task.create({ id: id(op.n), spec, ro: enc(op.ro), rw: enc(op.rw) })();
                const clash = Object.keys(op.rw).some((k) => Object.hasOwn(op.ro, k));
                const want = clash ? 'ReadOnlyKey' : m !== undefined ? 'NameCollision' : 'ok';
                assert.equal(r._tag === 'Right' ? 'ok' : r.left._tag, want);
                if (want === 'ok') model.set(op.n, { ro: { ...op.ro }, rw: { ...op.rw }, revision: 1 });
              } else if (op.op === 'update') {
                const r = await l.stores.task.update(
                  id(op.n),
                  encP(op.patch),
                  op.ifRevision === undefined ? {} : { ifRevision: op.ifRevision },
                )();
                const want =
                  m === undefined
                    ? 'NotFound'
                    : op.ifRevision !== undefined && op.ifRevision !== m.revision
                      ? 'Conflict'
                      : Object.keys(op.patch).some((k) => Object.hasOwn(m.ro, k))
                        ? 'ReadOnlyKey'
                        : 'ok';
                assert.equal(r._tag === 'Right' ? 'ok' : r.left._tag, want);
                if (want === 'ok' && m !== undefined) {
                  const rw = { ...m.rw };
                  for (const [k, v] of Object.entries(op.patch))
                    if (v === null) delete rw[k];
                    else rw[k] = v;
                  model.set(op.n, { ...m, rw, revision: m.revision + 1 });
                }
              } else if (op.op === 'delete') {
                const r = await l.stores.task.delete(id(op.n))();
                assert.equal(r._tag === 'Right' ? 'ok' : r.left._tag, m === undefined ? 'NotFound' : 'ok');
                model.delete(op.n);
              } else {
                const r = await l.stores.task.read(id(op.n))();
                if (m === undefined) assert.equal(r._tag === 'Left' && r.left._tag, 'NotFound');
                else {
                  assert.equal(r._tag, 'Right');
                  if (r._tag === 'Right') {
                    assert.deepEqual(dec(r.right.ro), m.ro);
                    assert.deepEqual(dec(r.right.rw), m.rw);
                    assert.equal(r.right.revision, m.revision);
                  }
                }
              }
            }
            const listed = await l.stores.task.list({ namePrefix: stem })();
            assert.equal(listed._tag, 'Right');
            if (listed._tag === 'Right') assert.equal(listed.right.length, model.size);
          }),
          { numRuns: runs },
        );
      },
    },
    {
      name: 'property: store entry points answer typed errors for arbitrary input, never throw',
      fn: async (l: TestBackend) => {
        const anyInput = fc.oneof(
          fc.anything(),
          fc.string(),
          fc.record({
            id: fc.oneof(fc.string(), fc.constant('task://local/x'), fc.anything()),
            ro: fc.anything(),
            rw: fc.anything(),
            spec: fc.anything(),
          }),
        );
        await fc.assert(
          fc.asyncProperty(anyInput, anyInput, async (a, c) => {
            const calls = [
              () => l.stores.task.create(illTyped(a))(),
              () => l.stores.task.read(illTyped(a), illTyped(c))(),
              () => l.stores.task.update(illTyped(a), illTyped(c))(),
              () => l.stores.task.delete(illTyped(a))(),
              () => l.stores.task.list(illTyped(a))(),
              () => l.composer.join(illTyped(a), illTyped(c))(),
              () => l.composer.handle(illTyped(a), illTyped(c))(),
              () => l.composer.commit(illTyped(a))(),
            ];
            for (const call of calls) {
              const r = await call();
              if (r._tag === 'Left') {
                assert.ok(isLesslError(r.left), `not a lessl error: ${String(r.left)}`);
                assert.ok(ERROR_TAGS.includes(r.left._tag));
              }
            }
          }),
          { numRuns: runs },
        );
      },
    },
  ];
};
