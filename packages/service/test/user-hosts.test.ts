// Users own hosts, on the test engines h1/h2 of scripts/hosts.sh: ann registers h2 as hers (mutual
// TLS, PEM texts); her tasks land there, bob's never do; bob gets 404 on it; the owner survives a
// restart of the service; ann's leave drains and unregisters it. Plus the owner rule of placement.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, OWNER_LABEL, place, purge, type PlacementHost } from '@lessl/docker';
import { createServer } from '@lessl/service';
import { client, hostNamed, testHosts } from '../../docker/test/hosts-support.js';
import { ADMIN_TOKEN, owned } from './helpers.js';

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
  const dir = mkdtempSync(join(tmpdir(), 'lessl-user-hosts-'));
  const tokens: Record<string, string> = { admin: ADMIN_TOKEN };
  let instance = '';
  /** The service as deployed: its own Docker backend over `dir` (engine h1; the hosts registered over REST kept with its records). */
  const serve = async () => {
    const server = await createServer({
      data: dir,
      adminToken: ADMIN_TOKEN,
      reapIntervalMs: 3_600_000,
      docker: { hosts: [{ name: 'h1', url: `unix://${hostNamed(file!, 'h1').socket}` }] },
    });
    instance = server.backend.instanceId;
    const url = await server.listen();
    const call = (path: string, o: { token?: string; method?: string; json?: unknown } = {}) =>
      fetch(`${url}${path}`, {
        method: o.method ?? (o.json === undefined ? 'GET' : 'POST'),
        headers: {
          authorization: `Bearer ${o.token ?? tokens.ann}`,
          ...(o.json === undefined ? {} : { 'content-type': 'application/json' }),
        },
        ...(o.json === undefined ? {} : { body: JSON.stringify(o.json) }),
        redirect: 'manual',
      });
    return { server, call };
  };
  let h: Awaited<ReturnType<typeof serve>>;
  beforeAll(async () => {
    h = await serve();
    await unwrap(h.server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
    for (const name of ['ann', 'bob'])
      tokens[name] = String((await body(await h.call('/v1/users', { token: ADMIN_TOKEN, json: { name } }))).token);
  }, 60_000);
  afterAll(async () => {
    await h.server.close();
    for (const n of ['h1', 'h2']) await purge(client(hostNamed(file!, n)), instance);
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
    (await client(hostNamed(file!, n)).listContainers({ all: true, filters: { label: [`lessl.registry=${instance}`] } })).length;
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
    const post = (json: unknown, token = tokens.ann) => h.call('/v1/hosts', { method: 'POST', token, json });
    expect((await post({ name: 'h2', url: `unix://${h2().socket}` })).status).toBe(400);
    expect((await post({ name: 'h2', url: h2().url, tls: h2().tls })).status).toBe(400); // paths on the server
    expect((await post({ name: 'h2', url: h2().url, tls: pem(), labels: { [OWNER_LABEL]: 'bob' } })).status).toBe(400);
    const r = await post({ name: 'h2', url: h2().url, tls: pem(), labels: { zone: 'b' } });
    expect(r.status).toBe(201);
    expect(await body(r)).toMatchObject({ name: 'h2', state: 'active', labels: { zone: 'b', [OWNER_LABEL]: 'ann' } });

    expect(await names(tokens.ann)).toEqual(['h1', 'h2']);
    expect(await names(tokens.bob)).toEqual(['h1']);
    expect(await names(ADMIN_TOKEN)).toEqual(['h1', 'h2']);
    const [theirs, unknown] = [
      await h.call('/v1/hosts/h2', { token: tokens.bob }),
      await h.call('/v1/hosts/h9', { token: tokens.bob }),
    ];
    expect([theirs.status, unknown.status]).toEqual([404, 404]);
    const strip = (p: Json) => ({ ...p, detail: undefined, instance: undefined });
    expect(strip(await body(theirs))).toEqual(strip(await body(unknown)));
    expect((await h.call('/v1/hosts/h2', { method: 'DELETE', token: tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/hosts/h1', { method: 'DELETE', token: tokens.bob })).status).toBe(403);
  }, 60_000);

  test("the owner's tasks land on their host; another user's never do", async () => {
    await daemons(tokens.ann, 2);
    expect([await containers('h1'), await containers('h2')]).toEqual([0, 2]);
    await daemons(tokens.bob, 4);
    expect([await containers('h1'), await containers('h2')]).toEqual([4, 2]);
    // an element pinned to a user's host must be that user's (the SDK's options.host)
    const volumes = h.server.backend.stores.volume;
    const bobs = await volumes.create({ id: 'volume://local/bobs-on-h2', ro: owned('bob'), options: { host: 'h2' } })();
    expect(E.isLeft(bobs) ? bobs.left._tag : 'made').toBe('InvalidEntry');
    await unwrap(volumes.create({ id: 'volume://local/anns-on-h2', ro: owned('ann'), options: { host: 'h2' } }));
  }, 240_000);

  test('the owner survives a restart of the service (and so do the elements on its host); the owner leaving drains and unregisters it', async () => {
    await h.server.close();
    h = await serve();
    const list = async (token: string): Promise<Json[]> => (await body(await h.call('/v1/hosts', { token }))).items as Json[];
    expect((await list(ADMIN_TOKEN)).find((x) => x.name === 'h2')).toMatchObject({
      state: 'active',
      labels: { [OWNER_LABEL]: 'ann' },
    });
    expect((await list(tokens.bob)).map((x) => x.name)).toEqual(['h1']);
    expect((await h.call('/v1/hosts/h2', { token: tokens.bob })).status).toBe(404);
    expect((await h.call('/v1/tasks', { token: tokens.ann })).status).toBe(200);

    const r = await h.call('/v1/users/ann?wait=240', { token: ADMIN_TOKEN, method: 'DELETE' });
    expect(r.status).toBe(200);
    const job = await body(r);
    expect(job).toMatchObject({ state: 'done', leave: { user: 'ann', failed: [] } });
    expect(job.leave.removed.hosts).toEqual(['h2']);
    expect(job.leave.removed.volumes).toEqual(['volume://local/anns-on-h2']);
    expect(job.leave.removed.tasks).toHaveLength(2);
    expect((await list(ADMIN_TOKEN)).find((x) => x.name === 'h2')?.state).toBe('removed');
    expect(h.server.db.hosts.has('h2')).toBe(false);
    expect(await containers('h2')).toBe(0);
    const left = await client(h2()).listVolumes({ filters: { label: [`lessl.registry=${instance}`, 'lessl.ro.owner=ann'] } });
    expect(left.Volumes ?? []).toEqual([]);
  }, 300_000);
});
