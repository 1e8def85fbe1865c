import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { unwrap, runtimeError } from '@lessl/core';
import { suite } from '@lessl/conformance';
import { MemoryData, openMemoryBackend } from '@lessl/memory';

const data = new Map<string, MemoryData>();

const { count, hostile } = suite({
  test,
  prefix: 'memory',
  hostileRuns: 300,
  faultInjection: true,
  fixtures: { tempDir: () => mkdtempSync(join(tmpdir(), 'lessl-conf-')) },
  factory: async (o) => {
    const shared = o.location === undefined ? new MemoryData() : (data.get(o.location) ?? new MemoryData());
    if (o.location !== undefined) data.set(o.location, shared);
    const fail = o.failStep;
    return unwrap(
      openMemoryBackend({
        stores: o.stores,
        data: shared,
        ...(o.location === undefined ? {} : { registry: { location: o.location } }),
        ...(o.authorize === undefined ? {} : { authorize: o.authorize }),
        ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
        ...(fail === undefined
          ? {}
          : { faults: (s) => (s.op === fail.op && s.id === fail.id ? runtimeError(s.id, 'injected fault') : undefined) }),
      }),
    );
  },
});

test('memory: the conformance suite registered its cases', () => {
  expect(count).toBeGreaterThanOrEqual(50);
});

afterAll(() => {
  console.log(`conformance (memory backend): ${count} cases`);
  console.log(
    `conformance (memory backend): hostile input: ${hostile.runs} runs, ${hostile.calls} calls in ${(hostile.ms / 1000).toFixed(1)} s`,
  );
});
