/**
 * What the operator configures, over REST on loopback: the warm pool (GET|PUT /v1/pool and at
 * start), images preloaded at start, purge, refresh of an image's source, git sources, and the
 * pool and image metrics. The memory backend checks the HTTP layer (admins only, bad input 400,
 * a backend without a pool answers 501); Docker checks that a service task takes a warm container
 * (pool hits), that a refreshed image serves new tasks, and what /metrics reports.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer as httpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';
import { start, type Harness } from './helpers.js';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

describe('operator routes (memory backend)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start();
  });
  afterAll(async () => {
    await h.close();
  });
  const problem = async (r: Response, status: number, tag: string): Promise<Json> => {
    const body = (await r.json()) as Json;
    expect([r.status, body.tag]).toEqual([status, tag]);
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    return body;
  };

  test('pool and purge are for admins; bad bodies are 400 naming the field; a backend without them answers 501', async () => {
    await problem(await h.call('/v1/pool'), 403, 'PermissionDenied');
    await problem(await h.call('/v1/images/purge', { method: 'POST', json: {} }), 403, 'PermissionDenied');
    const admin = { token: h.tokens.admin as string };
    const bad = await problem(
      await h.call('/v1/pool', { ...admin, method: 'PUT', json: { profiles: [{ image: 'busybox', min: -1 }] } }),
      400,
      'InvalidEntry',
    );
    expect(bad.keys).toEqual(['profiles.0.min']);
    await problem(await h.call('/v1/pool', { ...admin, method: 'PUT', json: { profiles: [], extra: 1 } }), 400, 'InvalidEntry');
    await problem(
      await h.call('/v1/images/purge', { ...admin, method: 'POST', json: { keepBytes: 'lots' } }),
      400,
      'InvalidEntry',
    );
    await problem(await h.call('/v1/pool', admin), 501, 'Unsupported');
    await problem(await h.call('/v1/pool', { ...admin, method: 'PUT', json: { profiles: [] } }), 501, 'Unsupported');
    await problem(await h.call('/v1/images/purge', { ...admin, method: 'POST' }), 501, 'Unsupported');
  });

  test('refresh: a public image by a non-admin is 403, another user’s or a missing one 404, an uploaded one 409 Unsupported', async () => {
    await problem(await h.call('/v1/images/busybox/refresh', { method: 'POST' }), 403, 'PermissionDenied');
    await problem(await h.call('/v1/images/nope/refresh', { method: 'POST' }), 404, 'NotFound');
    const put = await h.call('/v1/images/up?wait=5', {
      method: 'PUT',
      body: new Uint8Array(10),
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(put.status).toBe(201);
    await problem(await h.call('/v1/images/up/refresh', { method: 'POST', token: h.tokens.bob as string }), 404, 'NotFound');
    await problem(await h.call('/v1/images/up/refresh', { method: 'POST' }), 409, 'Unsupported');
    await problem(await h.call('/v1/images/up/refresh?wait=x', { method: 'POST' }), 400, 'InvalidEntry');
  });

  test('git sources: http(s) for users, file:// and paths for admins only; unknown fields refused', async () => {
    const git = (repo: string, extra: Json = {}) => ({ name: 'g', source: { type: 'git', repo, ...extra } });
    await problem(await h.call('/v1/images', { method: 'POST', json: git('file:///srv/repo') }), 403, 'PermissionDenied');
    await problem(await h.call('/v1/images', { method: 'POST', json: git('/srv/repo') }), 403, 'PermissionDenied');
    const p = await problem(
      await h.call('/v1/images', { method: 'POST', json: git('https://example.invalid/r.git', { branch: 'x' }) }),
      400,
      'InvalidEntry',
    );
    expect(p.keys).toContain('source.3.branch'); // (the union's alternatives each name what they refuse)
    const spec = (await (await h.server.app.inject({ url: '/openapi.json' })).json()) as Json;
    expect(JSON.stringify(spec.paths['/v1/images'].post)).toContain('"dockerfile"');
    expect(Object.keys(spec.paths)).toEqual(
      expect.arrayContaining(['/v1/pool', '/v1/images/purge', '/v1/images/{name}/refresh']),
    );
  });

  test('a bad pool configuration fails the start with InvalidEntry', async () => {
    await expect(createServer({ pool: { profiles: [{ image: '', min: 1 }] } as never })).rejects.toMatchObject({
      tag: 'InvalidEntry',
    });
  });
});

describe('operator configuration on Docker', () => {
  const docker = new Docker();
  const TOKEN = 'lsl_operate-test-admin-token';
  let server: LesslServer;
  let url = '';
  let dir = '';
  let files: Server;
  let filesUrl = '';
  const archives: Record<string, Buffer> = {};
  const made: string[] = [];

  const call = (path: string, init: { method?: string; json?: unknown } = {}): Promise<Response> =>
    fetch(`${url}${path}`, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${TOKEN}`, ...(init.json === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(init.json === undefined ? {} : { body: JSON.stringify(init.json) }),
    });
  /** A docker save archive of busybox with /v.txt holding `v`. */
  const archive = async (v: string): Promise<Buffer> => {
    const repo = `lessl-operate-${Math.random().toString(36).slice(2, 8)}`;
    const s = await docker.importImage(
      Buffer.from(await busyboxRootfsBytes()) as unknown as NodeJS.ReadableStream,
      {
        repo,
        tag: 'base',
      } as object,
    );
    await new Promise<void>((res, rej) => docker.modem.followProgress(s, (e) => (e ? rej(e) : res())));
    const w = await docker.createContainer({ Image: `${repo}:base`, Cmd: ['sh', '-c', `echo ${v} > /v.txt`] });
    await w.start();
    await w.wait();
    const img = (await w.commit({})) as { Id: string };
    await w.remove({ force: true });
    await docker.getImage(`${repo}:base`).remove();
    made.push(img.Id);
    const parts: Buffer[] = [];
    for await (const x of (await docker.getImage(img.Id).get()) as AsyncIterable<Buffer>) parts.push(x);
    return Buffer.concat(parts);
  };
  const run = async (cmd: string): Promise<Json> => {
    const r = await call('/v1/tasks?wait=60', { method: 'POST', json: { image: 'busybox', cmd: [cmd] } });
    expect(r.status).toBe(201);
    return (await r.json()) as Json;
  };
  const pool = async (): Promise<Json> => (await (await call('/v1/pool')).json()) as Json;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lessl-operate-'));
    archives.current = await archive('v1');
    files = httpServer((req, res) => (req.url === '/busybox.tar' ? res.end(archives.current) : res.writeHead(404).end()));
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
    filesUrl = `http://127.0.0.1:${(files.address() as AddressInfo).port}`;
    server = await createServer({
      data: dir,
      adminToken: TOKEN,
      policy: { allowNetworks: ['127.0.0.1/32'] },
      preload: [{ name: 'busybox', source: { type: 'url', url: `${filesUrl}/busybox.tar` } }],
      pool: { profiles: [{ image: 'busybox', min: 1 }] },
    });
    url = await server.listen();
  });
  afterAll(async () => {
    const instance = server.backend.instanceId;
    await server.close();
    await purge(docker, instance);
    files.closeAllConnections();
    await new Promise((r) => files.close(r));
    for (const i of made)
      await docker
        .getImage(i)
        .remove({ force: true })
        .catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  test('preloaded at start, the pool filled; a one-shot service task takes a warm container (a hit); /metrics reports it', async () => {
    expect(server.preloaded).toMatchObject([{ id: 'image://local/busybox', done: 'created', host: 'local' }]);
    const before = await pool();
    expect(before.profiles).toMatchObject([{ image: 'image://local/busybox', ready: 1 }]);
    const t = await run('cat /v.txt');
    expect(t.commands[0]).toMatchObject({ exitCode: 0, output: 'v1\n' });
    const after = await pool();
    expect(after.hits).toBe(before.hits + 1);
    const metrics = await (await fetch(`${url}/metrics`)).text();
    const key = String(after.profiles[0].key);
    expect(metrics).toContain(`lessl_pool_hits_total{profile="${key}",image="image://local/busybox"} ${after.hits}`);
    expect(metrics).toMatch(new RegExp(`lessl_pool_misses_total\\{profile="${key}",image="image://local/busybox"\\} \\d+`));
    expect(metrics).toMatch(new RegExp(`lessl_pool_size\\{profile="${key}",image="image://local/busybox",state="ready"\\} \\d`));
    expect(metrics).toContain('lessl_images{state="ready"} 1');
  });

  test('refresh over REST: new content serves the next task; the pool moved with it', async () => {
    archives.current = await archive('v2');
    const r = await call('/v1/images/busybox/refresh?wait=60', { method: 'POST' });
    expect(r.status).toBe(200);
    expect(r.headers.get('location')).toBe('/v1/images/busybox');
    expect(((await r.json()) as Json).refresh).toMatchObject({ state: 'done', changed: true, error: null });
    const again = await call('/v1/images/busybox/refresh?wait=60', { method: 'POST' });
    expect(((await again.json()) as Json).refresh).toMatchObject({ state: 'done', changed: false });
    for (let i = 0; i < 100 && (await pool()).profiles[0].ready < 1; i++) await new Promise((res) => setTimeout(res, 100));
    const hits = (await pool()).hits;
    expect((await run('cat /v.txt')).commands[0]).toMatchObject({ exitCode: 0, output: 'v2\n' });
    expect((await pool()).hits).toBe(hits + 1);
  });

  test('purge answers what it removed (dry run lists, keeps); PUT /v1/pool changes the profiles at run time', async () => {
    const extra = await call('/v1/images?wait=60', {
      method: 'POST',
      json: { name: 'spare', source: { type: 'url', url: `${filesUrl}/busybox.tar` } },
    });
    expect(extra.status).toBe(201);
    await run('true'); // busybox is now the more recently used
    const size = Number(((await (await call('/v1/images/busybox')).json()) as Json).size);
    const dry = await call('/v1/images/purge', { method: 'POST', json: { keepBytes: size, dryRun: true } });
    expect(dry.status).toBe(200);
    expect((await dry.json()) as Json).toMatchObject({ dryRun: true, removed: ['image://local/spare'], inUse: [] });
    expect((await call('/v1/images/spare')).status).toBe(200);
    const p = await call('/v1/images/purge', { method: 'POST', json: { keepBytes: size } });
    expect((await p.json()) as Json).toMatchObject({ dryRun: false, removed: ['image://local/spare'] });
    expect((await call('/v1/images/spare')).status).toBe(404);
    expect((await call('/v1/images/busybox')).status).toBe(200);
    const off = await call('/v1/pool', { method: 'PUT', json: { profiles: [] } });
    expect(off.status).toBe(200);
    expect((await off.json()) as Json).toMatchObject({ profiles: [], containers: 0 });
  });
});
