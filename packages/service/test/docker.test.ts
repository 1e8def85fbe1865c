/**
 * The service on a real Docker engine (the embedded default: Docker backend over an on-disk
 * database): the seed-001 example spec with inline and fetched resources, per-command exit
 * codes, a daemon with exec and delete, deadlines, no network, nothing left behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';

const docker = new Docker();
const TOKEN = 'lsl_docker-test-admin-token';
let server: LesslServer;
let url = '';
let dir = '';
let files: Server;
let filesUrl = '';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const call = async (path: string, init: { method?: string; json?: unknown } = {}): Promise<Response> =>
  fetch(`${url}${path}`, {
    method: init.method ?? 'GET',
    headers: { authorization: `Bearer ${TOKEN}`, ...(init.json === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
    redirect: 'manual',
  });
const containers = async (): Promise<Docker.ContainerInfo[]> =>
  docker.listContainers({ all: true, filters: { label: [`lessl.registry=${server.backend.instanceId}`] } });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-svc-'));
  server = await createServer({ data: dir, adminToken: TOKEN, policy: { allowNetworks: ['127.0.0.1/32'] } });
  await unwrap(server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
  url = await server.listen();
  files = createHttpServer((req, res) =>
    req.url === '/data/fetched.txt' ? res.end('from the web\n') : res.writeHead(404).end(),
  );
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
});
afterAll(async () => {
  const instance = server.backend.instanceId;
  await server.close();
  await purge(docker, instance);
  await new Promise((r) => files.close(r));
  rmSync(dir, { recursive: true, force: true });
});

describe('the service on Docker', () => {
  test('the seed-001 example spec runs: resources in place, pwd, env, each command its exit code; no container left', async () => {
    const spec = [
      {
        version: 1.0,
        daemon: false,
        image: 'busybox',
        ttl: 3600,
        resources: [
          { content_type: 'text/x-sh', data: "echo 'Hello World'\n", dest: '/opt/hello.sh' },
          { content_type: 'text/plain', src: `${filesUrl}/data/fetched.txt`, dest: '/opt' },
          { content_type: 'application/octet-stream', data: Buffer.from([0, 1, 2, 255]).toString('base64'), dest: '/bin2/blob' },
        ],
        task_name: 'hello_world',
        pwd: '/opt',
        env: { KEY: 'value' },
        cmd: [
          'sh hello.sh',
          'cat fetched.txt; echo "$KEY in $(pwd)"',
          'wc -c < /bin2/blob',
          'ls /sys/class/net',
          'exit 7',
          'echo never',
        ],
      },
    ];
    const r = await call('/v1/tasks?wait=60', { method: 'POST', json: spec });
    expect(r.status).toBe(201);
    const [t] = ((await r.json()) as Json).items as Json[];
    expect(t).toMatchObject({ name: 'hello_world', state: 'exited', exitCode: 7 });
    expect(t?.commands.map((c: Json) => [c.exitCode, c.output, c.state])).toEqual([
      [0, 'Hello World\n', 'exited'],
      [0, 'from the web\nvalue in /opt\n', 'exited'],
      [0, '4\n', 'exited'],
      [0, 'lo\n', 'exited'],
      [7, '', 'exited'],
      [null, null, 'skipped'],
    ]);
    expect(await containers()).toEqual([]);
  });

  test('stdin: the first command reads the input (text, or base64 for binary); later commands read an empty stdin', async () => {
    const post = async (spec: Json): Promise<Json> => {
      const r = await call('/v1/tasks?wait=60', { method: 'POST', json: spec });
      expect(r.status).toBe(201);
      return (await r.json()) as Json;
    };
    // one command: it is the container's process
    const one = await post({ image: 'busybox', cmd: ['cat'], stdin: 'hello from stdin\n' });
    expect(one.commands.map((c: Json) => [c.exitCode, c.output])).toEqual([[0, 'hello from stdin\n']]);
    // several: the first is exec'd with the input, the second reads end of file at once
    const two = await post({ image: 'busybox', cmd: ['cat', 'cat; echo second'], stdin: 'first only\n' });
    expect(two.commands.map((c: Json) => [c.exitCode, c.output])).toEqual([
      [0, 'first only\n'],
      [0, 'second\n'],
    ]);
    const bin = await post({ image: 'busybox', cmd: ['wc -c'], stdin_base64: Buffer.from([0, 1, 2, 255]).toString('base64') });
    expect(bin.commands[0]).toMatchObject({ exitCode: 0, output: '4\n' });
    expect(await containers()).toEqual([]);
  });

  test('a daemon: PUT execs into the same container; DELETE kills and removes it, idempotently', async () => {
    const t = (await (
      await call('/v1/tasks?wait=60', { method: 'POST', json: { image: 'busybox', daemon: true, cmd: ['echo $$ > /tmp/pid'] } })
    ).json()) as Json;
    expect(t.state).toBe('running');
    expect(t.container.id).toMatch(/^[0-9a-f]{64}$/);
    const after = (await (
      await call(`/v1/tasks/${t.id}?wait=60`, { method: 'PUT', json: { cmd: ['test -f /tmp/pid && echo same container'] } })
    ).json()) as Json;
    expect(after.commands[1]).toMatchObject({ exitCode: 0, output: 'same container\n' });
    expect((await containers()).map((c) => c.Id)).toContain(t.container.id);
    expect((await call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(await containers()).toEqual([]);
    expect(
      (await docker.listVolumes({ filters: { label: [`lessl.registry=${server.backend.instanceId}`] } })).Volumes ?? [],
    ).toEqual([]);
  });

  test('limits.timeout kills a command past it (reason deadline); the rest are skipped', async () => {
    const t = (await (
      await call('/v1/tasks?wait=60', {
        method: 'POST',
        json: { image: 'busybox', cmd: ['sleep 30', 'echo never'], limits: { timeout: 1 } },
      })
    ).json()) as Json;
    expect(t.commands.map((c: Json) => [c.state, c.reason])).toEqual([
      ['killed', 'deadline'],
      ['skipped', null],
    ]);
    expect(t.state).toBe('killed');
    expect(await containers()).toEqual([]);
  });

  test('the reaper removes an expired daemon: container and volumes gone, task marked expired', async () => {
    const spec = { image: 'busybox', daemon: true, ttl: 1, cmd: ['true'], resources: [{ data: 'x', dest: '/opt/x' }] };
    const t = (await (await call('/v1/tasks?wait=60', { method: 'POST', json: spec })).json()) as Json;
    expect((await containers()).map((c) => c.Id)).toEqual([t.container.id]);
    await new Promise((r) => setTimeout(r, Math.max(0, Date.parse(t.expires) - Date.now() + 10)));
    expect(await server.reap()).toBe(1);
    expect(await containers()).toEqual([]);
    const label = { label: [`lessl.registry=${server.backend.instanceId}`] };
    expect((await docker.listVolumes({ filters: label })).Volumes ?? []).toEqual([]);
    expect(((await (await call(`/v1/tasks/${t.id}`)).json()) as Json).state).toBe('expired');
    // PUT with start: true makes the container again from the stored spec (resources included)
    const again = await call(`/v1/tasks/${t.id}?wait=60`, { method: 'PUT', json: { cmd: ['cat /opt/x'], start: true } });
    const v = (await again.json()) as Json;
    expect([again.status, v.state, v.commands.at(-1)?.output]).toEqual([201, 'running', 'x']);
    expect(await containers()).toHaveLength(1);
    expect((await call(`/v1/tasks/${t.id}`, { method: 'DELETE' })).status).toBe(204);
    expect(await containers()).toEqual([]);
  });

  test('logs?follow streams a running task live', async () => {
    const job = (await (
      await call('/v1/tasks', { method: 'POST', json: { image: 'busybox', cmd: ['echo one; sleep 1; echo two', 'echo three'] } })
    ).json()) as Json;
    const r = await call(`/v1/tasks/${job.tasks[0]}/logs?follow=true`);
    expect(await r.text()).toBe('one\ntwo\nthree\n');
  });
});
