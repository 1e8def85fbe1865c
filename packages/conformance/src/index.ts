/**
 * @lessl/conformance: the suite every lessl backend runs (abstract-level style).
 *
 * @example
 * import { test } from 'vitest';
 * import { suite } from '@lessl/conformance';
 * const { count } = suite({ test, factory: async (o) => myBackend(o), supports: { parents: true, data: true, reopen: false, faultInjection: false } });
 * @packageDocumentation
 */
import { compositionCases } from './composition-cases.js';
import { eventCases } from './event-cases.js';
import { hostileCases, type HostileTally } from './hostile-cases.js';
import { lifecycleCases } from './lifecycle-cases.js';
import { assert, b, fails, ok, s, smallTar, STORES, uniq, type SuiteOptions, type TestBackend } from './harness.js';
import { modelCases } from './model-cases.js';
import { optionCases } from './option-cases.js';
import { specCases } from './spec-cases.js';
import { storeCases } from './store-cases.js';

export * from './harness.js';
export { hostileRuns, type HostileTally } from './hostile-cases.js';

/** One case: runs against a fresh backend. */
export interface Case {
  readonly name: string;
  readonly fn: (l: TestBackend) => Promise<void>;
  /** Its own timeout in ms, when it needs more than the suite's. */
  readonly timeout?: number;
}

const persistenceCases = (o: SuiteOptions): Case[] => {
  if (!o.supports.reopen || o.fixtures?.tempDir === undefined) return [];
  const tempDir = o.fixtures.tempDir;
  const spec = o.fixtures.taskSpec ?? { cmd: ['sleep', '3600'] };
  return [
    {
      name: 'persistence: a reopened backend has the same elements, and the event log continues its sequence',
      fn: async () => {
        const location = tempDir();
        const id = `task://local/${uniq('p')}`;
        const a = await o.factory({ stores: STORES, location });
        let seq: number;
        try {
          await ok(a.stores.task.create({ id, spec, ro: { r: b('1') }, rw: { w: b('1') } }));
          await ok(a.stores.task.update(id, { w: b('2') }));
          seq = a.events.lastSeq();
        } finally {
          await a.close();
        }
        const ro = STORES.map((c) => (c.kind === 'task' && c.name === 'local' ? { ...c, policy: 'read-only' as const } : c));
        const bk = await o.factory({ stores: ro, location });
        try {
          const el = await ok(bk.stores.task.read(id));
          assert.equal(el.revision, 2);
          assert.equal(s(el.ro.r), '1');
          assert.equal(s(el.rw.w), '2');
          assert.equal(bk.events.lastSeq(), seq);
          const replay: string[] = [];
          for await (const e of bk.events.stream({ ids: [id] }, { since: 0 })) {
            replay.push(e.type);
            if (replay.length === 2) break;
          }
          assert.deepEqual(replay, ['created', 'modified']);
          // a read-only store refuses writes to what it holds
          await fails(bk.stores.task.update(id, { w: b('3') }), 'InvalidLocation');
          await fails(bk.stores.task.delete(id), 'InvalidLocation');
          await fails(bk.stores.task.create({ id: `task://local/${uniq()}`, spec }), 'InvalidLocation');
          const other = `task://co/${uniq()}`;
          await ok(bk.stores.task.create({ id: other, spec }));
          assert.equal(bk.events.lastSeq(), seq + 1);
        } finally {
          await bk.close();
        }
      },
    },
  ];
};

/** How long `close()` may take after a case before the case fails. */
const CLOSE_MS = 60_000;

/** Runs `c` on `l`, then closes `l` within `CLOSE_MS`: a failure of the case wins over one of close. */
const runCase = async (c: Case, l: TestBackend): Promise<void> => {
  let failure: { readonly error: unknown } | undefined;
  try {
    await c.fn(l);
  } catch (error) {
    failure = { error };
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<'late'>((res) => (timer = setTimeout(() => res('late'), CLOSE_MS)));
  const closing = l.close().then(
    () => ({ error: undefined }),
    (error: unknown) => ({ error: error ?? new Error('close() rejected') }),
  );
  const closed = await Promise.race([closing, late]).finally(() => clearTimeout(timer));
  if (failure !== undefined) throw failure.error;
  if (closed === 'late') throw new Error(`close() did not return within ${CLOSE_MS} ms`);
  if (closed.error !== undefined) throw closed.error;
};

/**
 * Registers every conformance case with `test`. Returns how many cases were registered, and
 * the tally of the hostile-input cases (filled in as they run).
 * @example
 * suite({ test, prefix: 'mine', factory: async (o) => unwrap(openMine(o)), supports: { parents: true, data: true, reopen: false, faultInjection: false } });
 */
export const suite = (
  o: SuiteOptions,
): { readonly count: number; readonly names: readonly string[]; readonly hostile: Readonly<HostileTally> } => {
  const hostile: HostileTally = { runs: 0, calls: 0, ms: 0 };
  let cached: Uint8Array | undefined;
  const data = async (): Promise<Uint8Array> => {
    const f = o.fixtures?.imageData;
    if (f !== undefined) {
      const d = f();
      if (d instanceof Uint8Array) return d;
      const parts: Uint8Array[] = [];
      for await (const c of d) parts.push(c as Uint8Array);
      return Buffer.concat(parts);
    }
    cached ??= await smallTar();
    return cached;
  };
  const cases = [
    ...storeCases(o, data),
    ...compositionCases(o, data),
    ...eventCases(o),
    ...lifecycleCases(o, data),
    ...specCases(o, data),
    ...modelCases(o),
    ...persistenceCases(o),
    ...hostileCases(o, data, hostile),
    ...optionCases(o),
  ];
  const prefix = o.prefix === undefined ? '' : `${o.prefix}: `;
  for (const c of cases)
    o.test(`${prefix}${c.name}`, async () => runCase(c, await o.factory({ stores: STORES })), c.timeout ?? o.timeout ?? 60_000);
  return { count: cases.length, names: cases.map((c) => c.name), hostile };
};
