// The conformance suite on a backend over three engines (h1-h3 of scripts/hosts.sh): placement,
// routing and image copies must keep every contract of one engine.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { suite } from '@lessl/conformance';
import { busyboxRootfsBytes, type HostSpec } from '@lessl/docker';
import { conformanceFactory } from './support.js';
import { client, testHosts } from './hosts-support.js';

const file = testHosts();
const plain = (file?.hosts ?? []).filter((h) => /^h\d$/.test(h.name));
const specs: HostSpec[] = plain.map((h) => ({ name: h.name, url: `unix://${h.socket}` }));
const rootfs = await busyboxRootfsBytes();

const { count } =
  file === undefined
    ? { count: 0 }
    : suite({
        test,
        prefix: 'docker (3 hosts)',
        faultInjection: true,
        propertyRuns: 8,
        hostileRuns: 30,
        timeout: 120_000,
        fixtures: {
          imageData: () => rootfs,
          taskSpec: { cmd: ['sleep', '3600'], daemon: true },
          tempDir: () => mkdtempSync(join(tmpdir(), 'lessl-hconf-')),
        },
        factory: conformanceFactory({ hosts: specs }, () => plain.map((h) => client(h))),
      });

test('docker (3 hosts): the conformance suite ran on a multi-host backend', () => {
  expect(file, 'scripts/hosts.sh up has not run').toBeDefined();
  expect(count).toBeGreaterThanOrEqual(50);
});

afterAll(() => {
  console.log(`conformance (docker backend, 3 hosts): ${count} cases`);
});
