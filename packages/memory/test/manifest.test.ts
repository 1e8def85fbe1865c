/**
 * The conformance suite reads what a backend supports from the backend (`supports`), and its
 * manifest cases catch a manifest that lies. The deprecated `supports` option still counts for a
 * backend that answers no manifest. The suite's cases are collected here with a `test` of our own
 * and run against memory backends whose manifest is changed on purpose.
 */
import { describe, expect, test } from 'vitest';
import { unwrap, type Capabilities } from '@lessl/core';
import { suite, type SuiteOptions, type TestBackend } from '@lessl/conformance';
import { MEMORY_CAPABILITIES, openMemoryBackend } from '@lessl/memory';

type Collected = Map<string, () => Promise<void>>;

/** The suite's cases, by name, for a memory backend changed by `change`. */
const collect = (change: (b: TestBackend) => TestBackend, options: Partial<SuiteOptions> = {}): Collected => {
  const cases: Collected = new Map();
  suite({
    test: (name, fn) => void cases.set(name, fn),
    factory: async ({ stores }) => change(await unwrap(openMemoryBackend({ stores }))),
    ...options,
  });
  return cases;
};

/** The case whose name starts with `prefix`. */
const named = (cases: Collected, prefix: string): (() => Promise<void>) => {
  const hit = [...cases].find(([n]) => n.startsWith(prefix));
  if (hit === undefined) throw new Error(`no case ${prefix}`);
  return hit[1];
};

/** The backend with its manifest changed. */
const claiming =
  (change: Partial<Capabilities>) =>
  (b: TestBackend): TestBackend => ({ ...b, supports: { ...MEMORY_CAPABILITIES, ...change } });

/** The backend without a manifest, as one from before the manifest. */
const withoutManifest = (b: TestBackend): TestBackend => {
  const { supports: _, ...rest } = b;
  return rest;
};

describe('the capability manifest in the conformance suite', () => {
  test('the memory backend answers its manifest', async () => {
    const l = await unwrap(openMemoryBackend());
    expect(l.supports).toEqual(MEMORY_CAPABILITIES);
    await l.close();
  });

  test('an honest manifest passes the manifest cases', async () => {
    const cases = collect((b) => b);
    for (const [name, fn] of cases) if (name.startsWith('manifest:')) await fn();
  });

  test('a manifest denying data or parents the backend has fails its manifest case', async () => {
    await expect(named(collect(claiming({ data: false })), 'manifest: data')()).rejects.toThrow(/Unsupported/);
    await expect(named(collect(claiming({ parents: false })), 'manifest: parents')()).rejects.toThrow(/was created/);
  });

  test('a manifest with a capability the suite does not know fails', async () => {
    const odd = { ...MEMORY_CAPABILITIES, teleport: true };
    const oddly = (b: TestBackend): TestBackend => ({ ...b, supports: odd });
    await expect(named(collect(oddly), 'manifest: the backend answers every capability')()).rejects.toThrow();
  });

  test('without a manifest, the deprecated supports option is read', async () => {
    const legacy = { parents: false, data: true, reopen: false, faultInjection: true };
    const cases = collect(withoutManifest, { supports: legacy });
    await expect(named(cases, 'manifest: parents')()).rejects.toThrow(/was created/);
    await named(cases, 'manifest: the backend answers every capability')();
    expect([...cases.keys()].some((n) => n.startsWith('composition: a failing step rolls'))).toBe(true);
  });

  test('faultInjection is its own option: without it the rollback case is not registered', () => {
    const rollback = (c: Collected): boolean => [...c.keys()].some((n) => n.startsWith('composition: a failing step rolls'));
    expect(rollback(collect((b) => b))).toBe(false);
    expect(rollback(collect((b) => b, { faultInjection: true }))).toBe(true);
  });
});
