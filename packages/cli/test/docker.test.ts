/**
 * `lessl run` on a real Docker engine: the service's embedded default (Docker backend over an
 * on-disk database) with an image `busybox` made from the host's /bin/busybox; the seed-001
 * example spec runs through the CLI binary, its output streamed and its exit code propagated.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';
import { lessl } from './harness.js';

const docker = new Docker();
const TOKEN = 'lsl_cli-docker-test-admin-token';
let server: LesslServer;
let url = '';
let dir = '';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-cli-docker-'));
  server = await createServer({ data: join(dir, 'data'), adminToken: TOKEN });
  await unwrap(server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
  url = await server.listen();
});
afterAll(async () => {
  const instance = server.backend.registry.instanceId;
  await server.close();
  await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

describe('lessl run on Docker', () => {
  test('the seed-001 example spec: resources in place, pwd, env; output streamed; the exit code is the failing command’s', async () => {
    const spec = {
      version: 1.0,
      daemon: false,
      image: 'busybox',
      ttl: 3600,
      resources: [{ content_type: 'text/x-sh', data: "echo 'Hello World'\n", dest: '/opt/hello.sh' }],
      task_name: 'hello_world',
      pwd: '/opt',
      env: { KEY: 'value' },
      cmd: ['sh hello.sh', 'echo "$KEY in $(pwd)"', 'exit 7', 'echo never'],
    };
    const file = join(dir, 'seed.json');
    writeFileSync(file, JSON.stringify(spec));
    const r = await lessl(['run', file], { url, token: TOKEN });
    expect(r).toMatchObject({ code: 7, stdout: 'Hello World\nvalue in /opt\n' });
    const ok = await lessl(['run', '-'], { url, token: TOKEN, input: JSON.stringify({ ...spec, cmd: spec.cmd.slice(0, 2) }) });
    expect(ok).toMatchObject({ code: 0, stdout: 'Hello World\nvalue in /opt\n' });
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`lessl.registry=${server.backend.registry.instanceId}`] },
    });
    expect(left).toEqual([]);
  });
});
