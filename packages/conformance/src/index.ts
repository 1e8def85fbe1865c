/**
 * @lessl/conformance: the suite every lessl backend runs (abstract-level style). What the backend
 * supports is read from the backend itself (`Backend.supports`, its capability manifest).
 *
 * @example
 * import { test } from 'vitest';
 * import { suite } from '@lessl/conformance';
 * const { count } = suite({ test, factory: async (o) => myBackend(o), faultInjection: false });
 * @packageDocumentation
 */
import { compositionCases } from './composition-cases.js';
import { eventCases } from './event-cases.js';
import { smallTar, STORES } from './harness.js';
import { hostileCases, type HostileTally } from './hostile-cases.js';
import { inputCases } from './input-cases.js';
import { lifecycleCases } from './lifecycle-cases.js';
import { manifestCases } from './manifest-cases.js';
import { modelCases } from './model-cases.js';
import { optionCases } from './option-cases.js';
import { persistenceCases } from './persistence-cases.js';
import { portsCases } from './ports-cases.js';
import { specCases } from './spec-cases.js';
import { storeCases } from './store-cases.js';
import type { Case, ImageData, SuiteOptions, TestBackend } from './types.js';

export * from './harness.js';
export * from './types.js';
export { hostileRuns, type HostileTally } from './hostile-cases.js';

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

/** The image content of the cases: the `imageData` fixture's bytes, else a small tar (made once). */
const imageData = (o: SuiteOptions): ImageData => {
  let cached: Uint8Array | undefined;
  return async () => {
    const f = o.fixtures?.imageData;
    if (f === undefined) return (cached ??= await smallTar());
    const d = f();
    if (d instanceof Uint8Array) return d;
    const parts: Uint8Array[] = [];
    for await (const c of d) {
      if (!(c instanceof Uint8Array)) throw new TypeError('fixtures.imageData yielded a chunk that is not bytes');
      parts.push(c);
    }
    return Buffer.concat(parts);
  };
};

/**
 * Registers every conformance case with `test`. Returns how many cases were registered, and
 * the tally of the hostile-input cases (filled in as they run).
 * @example
 * suite({ test, prefix: 'mine', factory: async (o) => unwrap(openMine(o)), faultInjection: false });
 */
export const suite = (
  o: SuiteOptions,
): { readonly count: number; readonly names: readonly string[]; readonly hostile: Readonly<HostileTally> } => {
  const hostile: HostileTally = { runs: 0, calls: 0, ms: 0 };
  const data = imageData(o);
  const cases = [
    ...manifestCases(o, data),
    ...storeCases(o, data),
    ...compositionCases(o, data),
    ...eventCases(o),
    ...lifecycleCases(o, data),
    ...specCases(o, data),
    ...inputCases(o, data),
    ...portsCases(o, data),
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
