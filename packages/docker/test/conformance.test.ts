import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { suite } from '@lessl/conformance';
import { busyboxRootfsBytes } from '@lessl/docker';
import { conformanceFactory } from './support.js';

// The engine must answer: a Docker test never skips (see .ci/run, which starts one).
const rootfs = await busyboxRootfsBytes();

const { count, hostile } = suite({
  test,
  prefix: 'docker',
  faultInjection: true,
  propertyRuns: 15,
  hostileRuns: 100,
  timeout: 120_000,
  fixtures: {
    imageData: () => rootfs,
    taskSpec: { cmd: ['sleep', '3600'], daemon: true },
    tempDir: () => mkdtempSync(join(tmpdir(), 'lessl-dconf-')),
  },
  factory: conformanceFactory({}, (b) => [b.docker]),
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
