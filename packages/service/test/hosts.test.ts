// The service over a Docker backend with several engines (h1-h3 of scripts/hosts.sh): hosts are
// listed with state and load, registered and drained by admins, and tasks run on them.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { ownerAuthorizer } from '@lessl/service';
import { client, hostNamed, testHosts } from '../../docker/test/hosts-support.js';
import { start, SEED_SPEC, type Harness } from './helpers.js';

const file = testHosts();

interface HostView {
  name: string;
  state: string;
  engine: string;
  load: { slots: number };
  labels: Record<string, string>;
}

describe.runIf(file !== undefined)('hosts over REST', () => {
  let h: Harness;
  let instance = '';
  beforeAll(async () => {
    const f = file!;
    const backend = await unwrap(
      openDockerBackend({
        hosts: ['h1', 'h2'].map((n) => ({ name: n, url: `unix://${hostNamed(f, n).socket}` })),
        authorize: ownerAuthorizer,
      }),
    );
    instance = backend.instanceId;
    h = await start({ backend, baseImageData: await busyboxRootfsBytes() });
  }, 60_000);
  afterAll(async () => {
    await h.close();
    for (const n of ['h1', 'h2', 'h3']) await purge(client(hostNamed(file!, n)), instance);
  });

  const hosts = async (): Promise<HostView[]> => ((await (await h.call('/v1/hosts')).json()) as { items: HostView[] }).items;

  test('GET lists every engine with its state and load; a task runs on one of them', async () => {
    expect((await hosts()).map((x) => [x.name, x.state])).toEqual([
      ['h1', 'active'],
      ['h2', 'active'],
    ]);
    const r = await h.call('/v1/tasks?wait=60', { method: 'POST', json: SEED_SPEC });
    expect(r.status).toBe(201);
  }, 60_000);

  test('admins register an engine (mutual TLS) and drain one; others may not; bad input is 400', async () => {
    const h3 = hostNamed(file!, 'h3');
    const body = { name: 'h3', url: h3.url, tls: h3.tls, labels: { zone: 'c' } };
    // a user registers hosts of their own (user-hosts.test.ts), naming no file of the server
    expect((await h.call('/v1/hosts', { method: 'POST', json: body })).status).toBe(400);
    const added = await h.call('/v1/hosts', { method: 'POST', token: h.tokens.admin, json: body });
    expect(added.status).toBe(201);
    expect(((await added.json()) as HostView).state).toBe('active');
    expect((await h.call('/v1/hosts', { method: 'POST', token: h.tokens.admin, json: body })).status).toBe(409);
    const bad = await h.call('/v1/hosts', { method: 'POST', token: h.tokens.admin, json: { name: 'x y', url: 'ftp://z' } });
    expect(bad.status).toBe(400);
    expect((await h.call('/v1/hosts/h3', { method: 'DELETE' })).status).toBe(403);
    const drained = await h.call('/v1/hosts/h3?deadlineMs=100', { method: 'DELETE', token: h.tokens.admin });
    expect(drained.status).toBe(202);
    for (let i = 0; i < 50 && (await hosts()).find((x) => x.name === 'h3')?.state !== 'removed'; i++)
      await new Promise((r) => setTimeout(r, 100));
    expect((await hosts()).find((x) => x.name === 'h3')?.state).toBe('removed');
    expect((await h.call('/v1/hosts/nope', { method: 'DELETE', token: h.tokens.admin })).status).toBe(404);
  }, 60_000);
});
