/**
 * The structure of packages/*\/src stays within the budgets docs/architecture.md names
 * ("Keeping the house"), measured by scripts/metrics.mjs: a new long function, cast, `any`,
 * import cycle or registry read from the service fails here with where it is.
 */
import { expect, test } from 'vitest';
// @ts-expect-error: a plain ESM script without declarations
import { budgets, measure } from '../scripts/metrics.mjs';

interface Fn {
  readonly file: string;
  readonly line: number;
  readonly name: string;
  readonly length: number;
}
interface Measure {
  readonly lines: number;
  readonly functionsOver80: readonly Fn[];
  readonly functionsOver60: readonly Fn[];
  readonly castsPer1000: number;
  readonly any: number;
  readonly cycles: readonly (readonly string[])[];
  readonly registryReads: readonly string[];
  readonly outsideRefs: readonly string[];
}
const m: Measure = measure();
const b: Readonly<Record<string, number>> = budgets;
const where = (fs: readonly Fn[]): string[] => fs.map((f) => `${f.file}:${f.line} ${f.name} (${f.length} lines)`);

test('no function is over 80 lines, and at most a few over 60', () => {
  expect(where(m.functionsOver80)).toEqual([]);
  expect(m.functionsOver60.length, where(m.functionsOver60).join('\n')).toBeLessThanOrEqual(b.over60 ?? 0);
});

test('casts stay rare, and there is no any', () => {
  expect(m.castsPer1000).toBeLessThanOrEqual(b.castsPer1000 ?? 0);
  expect(m.any).toBe(0);
});

test('no import cycle between source files', () => {
  expect(m.cycles).toEqual([]);
});

test('the service and the CLI never read the registry; nothing points outside the repository', () => {
  expect(m.registryReads).toEqual([]);
  expect(m.outsideRefs).toEqual([]);
});
