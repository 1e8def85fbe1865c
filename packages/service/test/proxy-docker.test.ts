/**
 * The proxy on a real Docker engine: (a) busybox `httpd` serving files given as the spec's
 * resources, reached with the owner's token and through a shared route that dies with its task;
 * (b) a WebSocket echo server (a node script with no dependencies, in an image built from
 * `scripts/node-base.sh`'s base) and a `ws` client round trip through the proxy. The containers
 * keep network none: connections go through the backend (`tasks.connect`).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { pack } from 'tar-stream';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';

const docker = new Docker();
const TOKEN = 'lsl_proxy-docker-test-admin-token';
const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const WS_IMAGE = 'lessl-test/ws-echo:1';
let server: LesslServer;
let url = '';
let dir = '';
let ann = '';
let bob = '';

type Json = Record<string, unknown>;
const call = (
  path: string,
  init: { method?: string; json?: unknown; token?: string | null; body?: Uint8Array; type?: string } = {},
) =>
  fetch(`${url}${path}`, {
    method: init.method ?? 'GET',
    headers: {
      ...(init.token === null ? {} : { authorization: `Bearer ${init.token ?? ann}` }),
      ...(init.json === undefined ? {} : { 'content-type': 'application/json' }),
      ...(init.type === undefined ? {} : { 'content-type': init.type }),
    },
    ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
    ...(init.body === undefined ? {} : { body: init.body }),
  });
const json = async (r: Response): Promise<Json> => (await r.json()) as Json;

/** The ws-echo image: the node base with busybox (a shell and `sleep` for the service, no node entrypoint) and the echo script. */
const buildWsImage = async (): Promise<void> => {
  execFileSync('bash', [join(ROOT, 'scripts/node-base.sh')], { stdio: 'ignore' });
  const ctx = pack();
  const busybox = readFileSync('/bin/busybox');
  ctx.entry(
    { name: 'Dockerfile' },
    [
      'FROM lessl/node-base:20',
      'COPY busybox /bin/busybox',
      'COPY busybox /bin/sh',
      'COPY busybox /bin/sleep',
      'COPY ws-echo.mjs /app/ws-echo.mjs',
      'ENV PATH=/usr/local/bin:/bin',
      'ENTRYPOINT []',
      '',
    ].join('\n'),
  );
  ctx.entry({ name: 'busybox', mode: 0o755 }, busybox);
  ctx.entry({ name: 'ws-echo.mjs' }, readFileSync(fileURLToPath(new URL('fixtures/ws-echo.mjs', import.meta.url))));
  ctx.finalize();
  const stream = await docker.buildImage(ctx, { t: WS_IMAGE, pull: false });
  await new Promise((res, rej) => docker.modem.followProgress(stream, (err) => (err ? rej(err) : res(undefined))));
};

/** Uploads an engine image into the service's store as public `name` (a docker save archive); waits until it is ready. */
const upload = async (tag: string, name: string): Promise<void> => {
  const parts: Buffer[] = [];
  for await (const c of (await docker.getImage(tag).get()) as AsyncIterable<Buffer>) parts.push(c);
  const path = `/v1/images/${name}?public=true&wait=600`;
  const r = await call(path, { method: 'PUT', body: Buffer.concat(parts), type: 'application/x-tar', token: TOKEN });
  const img = await json(r);
  expect([r.status, img.state], JSON.stringify(img)).toEqual([201, 'ready']);
};

/** Submits a daemon and waits until `path` on its port answers through the proxy; answers its ID. */
const serve = async (spec: Json, port: number, path = '/'): Promise<string> => {
  const r = await call('/v1/tasks', { method: 'POST', json: { daemon: true, ttl: 600, ...spec, ports: [port] } });
  const job = await json(r);
  expect(r.status, JSON.stringify(job)).toBe(202);
  const id = String((job.tasks as string[])[0]);
  for (let i = 0; i < 600; i++) {
    const p = await call(`/v1/tasks/${id}/ports/${port}${path}`);
    if (p.status === 200) return id;
    const text = await p.text();
    if (p.status === 501) throw new Error(`this backend reaches no task ports: ${text}`);
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`task ${id} does not serve port ${port}: ${JSON.stringify(await json(await call(`/v1/tasks/${id}`)))}`);
};

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-proxy-'));
  server = await createServer({ data: dir, adminToken: TOKEN, concurrency: 8, proxyTimeoutMs: 10_000 });
  await unwrap(server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
  url = await server.listen();
  for (const name of ['ann', 'bob']) {
    const t = String((await json(await call('/v1/users', { method: 'POST', json: { name }, token: TOKEN }))).token);
    if (name === 'ann') ann = t;
    else bob = t;
  }
}, 120_000);
afterAll(async () => {
  const instance = server.backend.instanceId;
  await server.close();
  await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

describe('the proxy on Docker', () => {
  test('busybox httpd: files served to the owner and through a route; 404 for another user; the route dies with the task', async () => {
    const page = '<h1>hello from busybox httpd</h1>\n';
    const id = await serve(
      {
        image: 'busybox',
        resources: [{ content_type: 'text/html', data: page, dest: '/www/index.html' }],
        cmd: ['httpd -f -p 8080 -h /www'],
      },
      8080,
    );
    const r = await call(`/v1/tasks/${id}/ports/8080/index.html?x=1`);
    expect([r.status, await r.text()]).toEqual([200, page]);
    // requests in a row: each after the first takes the spare connection the one before opened
    for (let i = 0; i < 20; i++) {
      const again = await call(`/v1/tasks/${id}/ports/8080/index.html`);
      expect([again.status, await again.text()]).toEqual([200, page]);
    }
    expect((await call(`/v1/tasks/${id}/ports/8080/missing.html`)).status).toBe(404); // httpd's own answer
    expect((await call(`/v1/tasks/${id}/ports/8080/`, { token: bob })).status).toBe(404);
    const route = await json(await call(`/v1/tasks/${id}/routes`, { method: 'POST', json: { port: 8080 } }));
    const viaRoute = await call(`${String(route.url)}index.html`, { token: null });
    expect([viaRoute.status, await viaRoute.text()]).toEqual([200, page]);
    expect((await call(`/v1/tasks/${id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await call(String(route.url), { token: null })).status).toBe(404);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).toMatch(/^lessl_proxy_connections 0$/m);
  }, 180_000);

  test('WebSocket: a ws client round trip to an echo server in a task, with the token and through a route', async () => {
    await buildWsImage();
    await upload(WS_IMAGE, 'ws-echo');
    const id = await serve({ image: 'ws-echo', cmd: ['node /app/ws-echo.mjs 8081'] }, 8081);
    const roundTrip = (target: string, headers: Record<string, string>): Promise<{ path: string; got: (string | Buffer)[] }> =>
      new Promise((res, rej) => {
        const ws = new WebSocket(target, { headers });
        const got: (string | Buffer)[] = [];
        let path = '';
        ws.on('upgrade', (m) => (path = String(m.headers['x-path'])));
        ws.on('open', () => {
          ws.send('hello');
          ws.send(Buffer.alloc(70_000, 7));
        });
        ws.on('message', (data, binary) => {
          got.push(binary ? Buffer.from(data as Buffer) : String(data));
          if (got.length === 2) ws.close(1000, 'done');
        });
        ws.on('close', () => res({ path, got }));
        ws.on('error', rej);
      });
    const base = url.replace(/^http/, 'ws');
    const owner = await roundTrip(`${base}/v1/tasks/${id}/ports/8081/chat?room=1`, { authorization: `Bearer ${ann}` });
    expect(owner.path).toBe('/chat?room=1');
    expect(owner.got).toEqual(['hello', Buffer.alloc(70_000, 7)]);
    const route = await json(await call(`/v1/tasks/${id}/routes`, { method: 'POST', json: { port: 8081 } }));
    const shared = await roundTrip(`${base}${String(route.url)}`, {});
    expect(shared.got[0]).toBe('hello');
    await expect(roundTrip(`${base}/v1/tasks/${id}/ports/8081/`, { authorization: `Bearer ${bob}` })).rejects.toThrow(/404/);
    expect((await call(`/v1/tasks/${id}`, { method: 'DELETE' })).status).toBe(204);
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
  }, 300_000);
});
