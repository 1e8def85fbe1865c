/**
 * `lessl up` and `lessl fn invoke` end to end on a real Docker engine: the service's embedded
 * default (Docker backend over an on-disk database); a stack file whose image is made from a
 * source next to it (a path, relative to the file) and whose functions run on it; invocations
 * with input; a second `up` finds everything unchanged; `--prune` removes the functions and the
 * image the stack made, and no container of theirs is left.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';
import { lessl } from './harness.js';

const docker = new Docker();
const TOKEN = 'lsl_cli-stack-docker-test-admin-token';
let server: LesslServer;
let url = '';
let dir = '';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-cli-stack-'));
  server = await createServer({ data: join(dir, 'data'), adminToken: TOKEN });
  url = await server.listen();
  writeFileSync(join(dir, 'busybox-rootfs.tar'), await busyboxRootfsBytes());
});
afterAll(async () => {
  const instance = server.backend.instanceId;
  await server.close();
  await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

const run = (args: readonly string[], input?: string) =>
  lessl(args, { url, token: TOKEN, ...(input === undefined ? {} : { input }) });

test('up makes the image from its source and deploys the functions; invocations run on Docker; prune removes them', async () => {
  const file = join(dir, 'lessl.yml');
  const stack = [
    'version: 1',
    'images:',
    '  bb:',
    '    source: { type: path, path: ./busybox-rootfs.tar, format: rootfs }',
    'functions:',
    '  upper:',
    '    image: bb',
    '    cmd: tr a-z A-Z',
    '    reuse: per-function',
    '  count:',
    '    image: bb',
    '    argv: [wc, -c]',
    '    limits: { timeout: 30 }',
    '',
  ];
  writeFileSync(file, stack.join('\n'));
  const up = await run(['up', '-f', file]);
  expect(up.code, up.stderr).toBe(0);
  expect(up.stdout).toContain('created image bb\ncreated function upper version 1\ncreated function count version 1\n');

  expect(await run(['fn', 'invoke', 'upper', '--data', 'hello'])).toMatchObject({ code: 0, stdout: 'HELLO' });
  const warm = await run(['fn', 'invoke', 'upper', '-v'], 'again\n');
  expect(warm).toMatchObject({ code: 0, stdout: 'AGAIN\n' });
  expect(warm.stderr).toMatch(/: exited 0 in \d+ ms, warm, 0 bytes of stderr\n$/);
  expect(await run(['fn', 'invoke', 'count'], 'four')).toMatchObject({ code: 0, stdout: '4\n' });

  const again = await run(['up', '-f', file]);
  expect(again.code, again.stderr).toBe(0);
  expect(again.stdout).toContain('everything is unchanged\n');

  writeFileSync(file, 'version: 1\n');
  const pruned = await run(['up', '-f', file, '--prune', '--yes']);
  expect(pruned.code, pruned.stderr).toBe(0);
  expect(pruned.stdout).toContain('removed function count\nremoved function upper\nremoved image bb\n');
  expect(JSON.parse((await run(['--json', 'fn', 'ls'])).stdout)).toEqual([]);
  const left = await docker.listContainers({ all: true, filters: { label: [`lessl.registry=${server.backend.instanceId}`] } });
  expect(left.map((c) => c.Labels)).toEqual([]);
}, 240_000);
