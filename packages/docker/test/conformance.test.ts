import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { runtimeError, unwrap } from '@lessl/core';
import { suite } from '@lessl/conformance';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';

// The engine must answer: a Docker test never skips (see .ci/run, which starts one).
const rootfs = await busyboxRootfsBytes();

const { count, hostile } = suite({
  test,
  prefix: 'docker',
  supports: { parents: true, data: true, reopen: true, faultInjection: true },
  propertyRuns: 15,
  hostileRuns: 100,
  timeout: 120_000,
  fixtures: {
    imageData: () => rootfs,
    taskSpec: { cmd: ['sleep', '3600'], daemon: true },
    tempDir: () => mkdtempSync(join(tmpdir(), 'lessl-dconf-')),
  },
  factory: async (o) => {
    const fail = o.failStep;
    const b = await unwrap(
      openDockerBackend({
        stores: o.stores,
        registry: o.location === undefined ? { memory: true } : { location: o.location },
        ...(o.authorize === undefined ? {} : { authorize: o.authorize }),
        ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
        ...(fail === undefined
          ? {}
          : { faults: (s) => (s.op === fail.op && s.id === fail.id ? runtimeError(s.id, 'injected fault') : undefined) }),
      }),
    );
    // in-memory registries are thrown away: remove what they made (persistent ones are purged by the reopen)
    return o.location === undefined
      ? {
          ...b,
          close: async () => {
            await b.close();
            await purge(b.docker, b.registry.instanceId);
          },
        }
      : b;
  },
});

test('docker: the conformance suite registered its cases', () => {
  expect(count).toBeGreaterThanOrEqual(50);
});

afterAll(() => {
  console.log(`conformance (docker backend): ${count} cases`);
  console.log(
    `conformance (docker backend): hostile input: ${hostile.runs} runs, ${hostile.calls} calls in ${(hostile.ms / 1000).toFixed(1)} s`,
  );
});
