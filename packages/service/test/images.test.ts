/**
 * Images and hosts over REST, against a real server on loopback: uploads and sources create
 * images asynchronously (202 + Location, ?wait -> 201), ownership hides other users' images (404),
 * public images are for everyone, admins only for path sources and public images; on Docker, an
 * archive upload and a URL source make images tasks can run on.
 */
import { createServer as httpServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { ADMIN_TOKEN, start, type Harness } from './helpers.js';

describe('images over REST (memory backend)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await start();
  });
  afterAll(async () => {
    await h.close();
  });

  test('an archive upload is created asynchronously; ?wait answers 201; the owner sees it, another user does not', async () => {
    const put = await h.call('/v1/images/mine', {
      method: 'PUT',
      body: new Uint8Array(2048),
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(put.status).toBe(202);
    expect(put.headers.get('location')).toBe('/v1/images/mine');
    let v = (await put.json()) as { state: string; owner: string };
    for (let i = 0; i < 100 && v.state === 'creating'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      v = (await (await h.call('/v1/images/mine')).json()) as { state: string; owner: string };
    }
    expect(v).toMatchObject({ state: 'ready', owner: 'ann', public: false });
    const waited = await h.call('/v1/images/other?wait=5', {
      method: 'PUT',
      body: new Uint8Array(10),
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(waited.status).toBe(201);
    expect((await h.call('/v1/images/mine', { token: h.tokens.bob })).status).toBe(404);
    const listed = (await (await h.call('/v1/images', { token: h.tokens.bob })).json()) as { items: { name: string }[] };
    expect(listed.items.map((i) => i.name)).toEqual(['busybox']);
    const mine = (await (await h.call('/v1/images')).json()) as { items: { name: string }[] };
    expect(mine.items.map((i) => i.name)).toEqual(['busybox', 'mine', 'other']);
    // a task of ann's runs on her image; bob cannot name it
    const bobs = await h.call('/v1/tasks', {
      method: 'POST',
      token: h.tokens.bob,
      json: { version: 1.0, image: 'mine', cmd: ['echo x'] },
    });
    expect(bobs.status).toBe(400);
  });

  test("users named like the SDK's own principals (anonymous, lessl-service) see only their own and public images", async () => {
    const put = await h.call('/v1/images/private?wait=5', {
      method: 'PUT',
      body: new Uint8Array(10),
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(put.status).toBe(201);
    for (const name of ['anonymous', 'lessl-service']) {
      const r = await h.call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name } });
      const { token } = (await r.json()) as { token: string };
      expect((await h.call('/v1/images/private', { token })).status).toBe(404);
      const listed = (await (await h.call('/v1/images', { token })).json()) as { items: { name: string }[] };
      expect(listed.items.map((i) => i.name)).toEqual(['busybox']);
      const task = await h.call('/v1/tasks', { method: 'POST', token, json: { version: 1.0, image: 'private', cmd: ['true'] } });
      expect(task.status).toBe(400);
    }
  });

  test('names are unique; bad bodies, path sources and public images by non-admins are refused', async () => {
    const dup = await h.call('/v1/images/mine', {
      method: 'PUT',
      body: new Uint8Array(10),
      headers: { 'content-type': 'application/x-tar' },
    });
    expect([dup.status, ((await dup.json()) as { tag: string }).tag]).toEqual([409, 'NameCollision']);
    const bad = await h.call('/v1/images', { method: 'POST', json: { name: 'x', source: { type: 'ftp', url: 'ftp://x' } } });
    expect(bad.status).toBe(400);
    const unknown = await h.call('/v1/images', {
      method: 'POST',
      json: { name: 'x', source: { type: 'registry', ref: 'a' }, extra: 1 },
    });
    expect(unknown.status).toBe(400);
    const path = await h.call('/v1/images', { method: 'POST', json: { name: 'p', source: { type: 'path', path: '/etc' } } });
    expect(path.status).toBe(403);
    const pub = await h.call('/v1/images', {
      method: 'POST',
      json: { name: 'q', public: true, source: { type: 'registry', ref: 'a' } },
    });
    expect(pub.status).toBe(403);
    const text = await h.call('/v1/images/t', { method: 'PUT', body: 'not a tar', headers: { 'content-type': 'text/plain' } });
    expect(text.status).toBe(415);
    expect((await h.call('/v1/images/NOT-A-NAME')).status).toBe(404);
  });

  test('delete: the owner or an admin; others get 404; idempotent', async () => {
    expect((await h.call('/v1/images/other', { method: 'DELETE', token: h.tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/images/other', { method: 'DELETE' })).status).toBe(204);
    expect((await h.call('/v1/images/other', { method: 'DELETE' })).status).toBe(204);
    expect((await h.call('/v1/images/other')).status).toBe(404);
  });

  test('hosts: the engine the service uses', async () => {
    const r = (await (await h.call('/v1/hosts')).json()) as { items: { name: string; state: string }[] };
    expect(r.items.map((x) => [x.name, x.state])).toEqual([['local', 'active']]);
    expect((await h.call('/v1/hosts', { token: null })).status).toBe(401);
    // a backend without Docker engines cannot add or drain hosts
    const add = await h.call('/v1/hosts', {
      method: 'POST',
      token: h.tokens.admin,
      json: { name: 'h9', url: 'unix:///nowhere.sock' },
    });
    expect(add.status).toBe(501);
    // users may register hosts of their own: on this backend too, nothing can be added
    expect((await h.call('/v1/hosts', { method: 'POST', json: { name: 'h9', url: 'tcp://10.0.0.9:2376' } })).status).toBe(501);
  });
});

describe('images over REST (Docker)', () => {
  let h: Harness;
  let b: DockerBackend;
  let files: Server;
  let url = '';
  let archive: Buffer;
  beforeAll(async () => {
    b = await unwrap(openDockerBackend({ authorize: (await import('@lessl/service')).ownerAuthorizer }));
    const base = await unwrap(b.stores.image.create({ id: 'image://local/seed', data: await busyboxRootfsBytes() }));
    const parts: Buffer[] = [];
    for await (const c of (await unwrap(b.exportImage(base.id))) as AsyncIterable<Buffer>) parts.push(c);
    archive = Buffer.concat(parts);
    files = httpServer((_req, res) => res.end(archive));
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', () => r()));
    const a = files.address();
    url = `http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}/image.tar`;
    h = await start({ backend: b, baseImageData: await busyboxRootfsBytes(), policy: { allowNetworks: ['127.0.0.1/32'] } });
  });
  afterAll(async () => {
    await h?.close();
    await purge(b.docker, b.instanceId);
    await new Promise((r) => files.close(r));
  });

  test('an uploaded archive and a URL source become images tasks run on', async () => {
    const put = await h.call('/v1/images/uploaded?wait=60', {
      method: 'PUT',
      body: archive,
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(put.status).toBe(201);
    const post = await h.call('/v1/images?wait=60', {
      method: 'POST',
      token: ADMIN_TOKEN,
      json: { name: 'fetched', public: true, source: { type: 'url', url } },
    });
    expect([post.status, ((await post.json()) as { public: boolean }).public]).toEqual([201, true]);
    for (const image of ['uploaded', 'fetched']) {
      const r = await h.call('/v1/tasks?wait=60', { method: 'POST', json: { version: 1.0, image, cmd: [`echo on ${image}`] } });
      const t = (await r.json()) as { exitCode: number; commands: { output: string }[] };
      expect([r.status, t.exitCode, t.commands[0]?.output]).toEqual([201, 0, `on ${image}\n`]);
    }
    const failed = await h.call('/v1/images?wait=60', {
      method: 'POST',
      json: {
        name: 'broken',
        source: { type: 'url', url: `${url.replace('image.tar', 'x')}`, checksum: `sha256:${'0'.repeat(64)}` },
      },
    });
    const v = (await failed.json()) as { state: string; error: { tag: string } };
    expect([v.state, v.error.tag]).toEqual(['failed', 'ChecksumMismatch']);
    const hosts = (await (await h.call('/v1/hosts')).json()) as { items: { state: string; engine: string }[] };
    expect([hosts.items[0]?.name, hosts.items[0]?.state]).toEqual(['local', 'active']);
  });

  test('an upload cut halfway (the client resets its connection) fails that image; the service keeps answering', async () => {
    const { hostname, port } = new URL(h.url);
    const socket = connect(Number(port), hostname);
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.on('error', () => undefined);
    socket.write(
      `PUT /v1/images/cut HTTP/1.1\r\nhost: ${hostname}\r\nauthorization: Bearer ${h.tokens.ann}\r\n` +
        `content-type: application/x-tar\r\ncontent-length: ${archive.length}\r\n\r\n`,
    );
    socket.write(archive.subarray(0, archive.length >> 1)); // mid-entry: the archive's layer is larger than that
    await new Promise((r) => setTimeout(r, 300));
    socket.resetAndDestroy();
    let v = { state: 'creating' } as { state: string; error?: { tag: string } };
    for (let i = 0; i < 300 && v.state === 'creating'; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const r = await h.call('/v1/images/cut');
      if (r.status === 200) v = (await r.json()) as typeof v;
    }
    expect(v.state).toBe('failed');
    expect((await h.call('/v1/hosts')).status).toBe(200);
    expect((await h.call('/v1/images/cut', { method: 'DELETE' })).status).toBe(204);
    const again = await h.call('/v1/images/cut?wait=60', {
      method: 'PUT',
      body: archive,
      headers: { 'content-type': 'application/x-tar' },
    });
    expect(again.status).toBe(201);
  });
});
