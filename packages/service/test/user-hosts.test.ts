// Users own hosts, on the test engines h1/h2 of scripts/hosts.sh: ann registers h2 as hers (mutual
// TLS, PEM texts); her tasks land there, bob's never do; bob gets 404 on it; the owner survives a
// restart of the service; ann's leave drains and unregisters it. Plus the owner rule of placement.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, OWNER_LABEL, place, purge, type PlacementHost } from '@lessl/docker';
import { createServer, ownerAuthorizer } from '@lessl/service';
import { client, hostNamed, testHosts } from '../../docker/test/hosts-support.js';
import { ADMIN_TOKEN, start, type Harness } from './helpers.js';

const file = testHosts();

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const body = async (r: Response): Promise<Json> => (await r.json()) as Json;

describe('the owner rule of placement', () => {
  const host = (name: string, labels: Record<string, string> = {}, slots = 0): PlacementHost => ({
    name,
    state: 'active',
    labels,
    capacity: { slots: 4 },
    load: { slots, memoryBytes: 0 },
    hasImage: () => true,
  });
  const hosts = [host('shared'), host('anns', { [OWNER_LABEL]: 'ann' }, 3), host('bobs', { [OWNER_LABEL]: 'bob' })];
  const chosen = (owner?: string): string | undefined => {
    const p = place(hosts, { memoryBytes: 0, ...(owner === undefined ? {} : { owner }) });
    return p.ok ? p.host.name : undefined;
  };

  test("an owner's hosts come first (even loaded); nobody else is placed there, and they are not named in refusals", () => {
    expect(chosen('ann')).toBe('anns');
    expect(chosen('bob')).toBe('bobs');
    expect(chosen('carl')).toBe('shared');
    expect(chosen()).toBe('shared');
    const full = place([host('anns', { [OWNER_LABEL]: 'ann' })], { memoryBytes: 0, owner: 'bob' });
    expect(full).toEqual({ ok: false, refused: [] });
    // the owner's host is full: a shared one takes it
    expect(place([host('anns', { [OWNER_LABEL]: 'ann' }, 4), host('shared')], { memoryBytes: 0, owner: 'ann' })).toMatchObject({
      ok: true,
      host: { name: 'shared' },
    });
  });
});

describe.runIf(file !== undefined)('users own hosts (REST, engines h1 and h2)', () => {
  let h: Harness;
  const instances: string[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'lessl-user-hosts-'));
  const open = async () => {
    const backend = await unwrap(
      openDockerBackend({
        hosts: [{ name: 'h1', url: `unix://${hostNamed(file!, 'h1').socket}` }],
        authorize: ownerAuthorizer,
        registry: { location: join(dir, 'registry') },
      }),
    );
    instances.push(backend.instanceId);
    return backend;
  };
  beforeAll(async () => {
    h = await start({ backend: await open(), baseImageData: await busyboxRootfsBytes(), data: dir });
  }, 60_000);
  afterAll(async () => {
    await h.close();
    for (const n of ['h1', 'h2']) for (const i of new Set(instances)) await purge(client(hostNamed(file!, n)), i);
    rmSync(dir, { recursive: true, force: true });
  });

  const h2 = () => hostNamed(file!, 'h2');
  const pem = () => ({
    ca: readFileSync(h2().tls.ca, 'utf8'),
    cert: readFileSync(h2().tls.cert, 'utf8'),
    key: readFileSync(h2().tls.key, 'utf8'),
  });
  const names = async (token: string): Promise<string[]> =>
    ((await body(await h.call('/v1/hosts', { token }))).items as Json[]).map((x) => String(x.name)).sort();
  /** The service's containers on engine `n`. */
  const containers = async (n: string): Promise<number> =>
    (await client(hostNamed(file!, n)).listContainers({ all: true, filters: { label: [`lessl.registry=${instances[0]}`] } }))
      .length;
  const daemons = async (token: string, count: number): Promise<void> => {
    for (let i = 0; i < count; i++) {
      const r = await h.call('/v1/tasks?wait=120', {
        method: 'POST',
        token,
        json: { image: 'busybox', daemon: true, cmd: ['true'] },
      });
      expect(r.status).toBe(201);
    }
  };

  test('a user registers an engine as theirs; bad registrations are 400; others do not see it (404, no oracle)', async () => {
    const post = (json: unknown, token = h.tokens.ann) => h.call('/v1/hosts', { method: 'POST', token, json });
    expect((await post({ name: 'h2', url: `unix://${h2().socket}` })).status).toBe(400);
    expect((await post({ name: 'h2', url: h2().url, tls: h2().tls })).status).toBe(400); // paths on the server
    expect((await post({ name: 'h2', url: h2().url, tls: pem(), labels: { [OWNER_LABEL]: 'bob' } })).status).toBe(400);
    const r = await post({ name: 'h2', url: h2().url, tls: pem(), labels: { zone: 'b' } });
    expect(r.status).toBe(201);
    expect(await body(r)).toMatchObject({ name: 'h2', state: 'active', labels: { zone: 'b', [OWNER_LABEL]: 'ann' } });

    expect(await names(h.tokens.ann)).toEqual(['h1', 'h2']);
    expect(await names(h.tokens.bob)).toEqual(['h1']);
    expect(await names(ADMIN_TOKEN)).toEqual(['h1', 'h2']);
    const [theirs, unknown] = [
      await h.call('/v1/hosts/h2', { token: h.tokens.bob }),
      await h.call('/v1/hosts/h9', { token: h.tokens.bob }),
    ];
    expect([theirs.status, unknown.status]).toEqual([404, 404]);
    const strip = (p: Json) => ({ ...p, detail: undefined, instance: undefined });
    expect(strip(await body(theirs))).toEqual(strip(await body(unknown)));
    expect((await h.call('/v1/hosts/h2', { method: 'DELETE', token: h.tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/hosts/h1', { method: 'DELETE', token: h.tokens.bob })).status).toBe(403);
  }, 60_000);

  test("the owner's tasks land on their host; another user's never do", async () => {
    await daemons(h.tokens.ann, 2);
    expect([await containers('h1'), await containers('h2')]).toEqual([0, 2]);
    await daemons(h.tokens.bob, 4);
    expect([await containers('h1'), await containers('h2')]).toEqual([4, 2]);
  }, 240_000);

  test('the owner survives a restart of the service; the owner leaving drains and unregisters the host', async () => {
    await h.server.close();
    await h.server.backend.close();
    const again = await createServer({ data: dir, backend: await open(), adminToken: ADMIN_TOKEN, reapIntervalMs: 3_600_000 });
    const url = await again.listen();
    const call = (path: string, token: string, method = 'GET') =>
      fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    try {
      const list = async (token: string): Promise<Json[]> => (await body(await call('/v1/hosts', token))).items as Json[];
      expect((await list(ADMIN_TOKEN)).find((x) => x.name === 'h2')).toMatchObject({
        state: 'active',
        labels: { [OWNER_LABEL]: 'ann' },
      });
      expect((await list(h.tokens.bob)).map((x) => x.name)).toEqual(['h1']);
      expect((await call('/v1/hosts/h2', h.tokens.bob)).status).toBe(404);

      const r = await call('/v1/users/ann?wait=240', ADMIN_TOKEN, 'DELETE');
      expect(r.status).toBe(200);
      const job = await body(r);
      expect(job).toMatchObject({ state: 'done', leave: { user: 'ann', failed: [] } });
      expect(job.leave.removed.hosts).toEqual(['h2']);
      expect(job.leave.removed.tasks).toHaveLength(2);
      expect((await list(ADMIN_TOKEN)).find((x) => x.name === 'h2')?.state).toBe('removed');
      expect(again.db.hosts.has('h2')).toBe(false);
      expect(await containers('h2')).toBe(0);
    } finally {
      await again.close();
      await again.backend.close();
    }
  }, 300_000);
});
