/**
 * SSRF: a user's resource `src` and URL or git image source may not reach loopback, private or
 * link-local addresses (the service's own /metrics included): refused at submission (400 naming
 * the address and range) and again when fetched, at every redirect. The operator's
 * `policy.allowNetworks` lets networks through. Real servers on loopback, memory backend.
 */
import { createServer as httpServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createServer } from '@lessl/service';
import { settle, start, type Harness } from './helpers.js';

type Json = Record<string, unknown>;
let files: Server;
let other: Server;
let port = 0;
const servers: Harness[] = [];

beforeAll(async () => {
  // 127.0.0.1 serves the script and redirects to 127.0.0.2 (another loopback address that serves it too)
  const handler = (req: { url?: string }, res: import('node:http').ServerResponse): void => {
    if (req.url === '/ok.sh') return void res.end('echo fetched\n');
    if (req.url === '/odd-status') return void res.writeHead(999).end('x');
    if (req.url === '/to-other') return void res.writeHead(302, { location: `http://127.0.0.2:${port}/ok.sh` }).end();
    return void res.writeHead(404).end();
  };
  files = httpServer(handler);
  await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
  port = (files.address() as AddressInfo).port;
  other = httpServer(handler);
  await new Promise<void>((r) => other.listen(port, '127.0.0.2', r));
});
afterAll(async () => {
  for (const h of servers) await h.close();
  for (const s of [files, other]) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

const harness = async (allowNetworks?: string[]): Promise<Harness> => {
  const h = await start(allowNetworks === undefined ? {} : { policy: { allowNetworks } });
  servers.push(h);
  return h;
};
const task = (src: string) => ({ image: 'busybox', cmd: ['true'], resources: [{ src, dest: '/opt' }] });
const refused = async (r: Response, key: string): Promise<string> => {
  const p = (await r.json()) as Json;
  expect([r.status, p.tag, p.keys]).toEqual([400, 'InvalidEntry', [key]]);
  return String(p.detail);
};

describe('by default', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await harness();
  });

  test("a src on loopback is a 400 naming the address and range: the service's own /metrics, 127.0.0.1, localhost, [::1]", async () => {
    const post = (src: string) => h.call('/v1/tasks', { method: 'POST', json: task(src) });
    expect(await refused(await post(`${h.url}/metrics`), 'resources.src')).toMatch(
      /127\.0\.0\.1 is loopback \(127\.0\.0\.0\/8\)/,
    );
    expect(await refused(await post(`http://localhost:${port}/ok.sh`), 'resources.src')).toMatch(
      /localhost: 127\.0\.0\.1 is loopback/,
    );
    expect(await refused(await post(`http://[::1]:${port}/ok.sh`), 'resources.src')).toMatch(/::1 is loopback/);
    expect(await refused(await post(`http://[::ffff:127.0.0.1]:${port}/ok.sh`), 'resources.src')).toMatch(/is loopback/);
    expect(await refused(await post('http://10.1.2.3/x'), 'resources.src')).toMatch(/10\.1\.2\.3 is private/);
    expect(await refused(await post('http://169.254.169.254/latest/meta-data'), 'resources.src')).toMatch(/is link-local/);
    expect(await refused(await post('http://0.0.0.0/x'), 'resources.src')).toMatch(/"this network"/);
    // admins too: the allow-list is the operator's only exemption
    const admin = await h.call('/v1/tasks', {
      method: 'POST',
      json: task(`http://127.0.0.1:${port}/ok.sh`),
      token: h.tokens.admin,
    });
    await refused(admin, 'resources.src');
  });

  test('a URL or http(s) git image source on loopback is a 400 naming the reason', async () => {
    const url = await h.call('/v1/images', {
      method: 'POST',
      json: { name: 'x', source: { type: 'url', url: `http://127.0.0.1:${port}/image.tar` } },
    });
    expect(await refused(url, 'source.url')).toMatch(/127\.0\.0\.1 is loopback/);
    const git = await h.call('/v1/images', {
      method: 'POST',
      json: { name: 'x', source: { type: 'git', repo: `http://localhost:${port}/repo.git` } },
    });
    expect(await refused(git, 'source.repo')).toMatch(/localhost: 127\.0\.0\.1 is loopback/);
    expect((await h.call('/v1/images/x')).status).toBe(404);
    // what is not a URL is the source's problem, not a 5xx of the check
    const odd = await h.call('/v1/images', { method: 'POST', json: { name: 'y', source: { type: 'url', url: 'http://[::1' } } });
    expect(odd.status).toBeLessThan(500);
  });
});

describe('with an allow-list', () => {
  test('the allowed network works; a redirect out of it to loopback fails the job naming the address', async () => {
    const h = await harness(['127.0.0.1/32']);
    for (const src of [`http://127.0.0.1:${port}/ok.sh`, `http://localhost:${port}/ok.sh`]) {
      const r = await h.call('/v1/tasks?wait=10', { method: 'POST', json: task(src) });
      expect(r.status).toBe(201);
    }
    const r = await h.call('/v1/tasks', { method: 'POST', json: task(`http://127.0.0.1:${port}/to-other`) });
    expect(r.status).toBe(202);
    const job = await settle(h, ((await r.json()) as Json).id as string);
    expect(job.state).toBe('failed');
    expect(job.error).toMatchObject({ tag: 'InvalidEntry', message: expect.stringMatching(/127\.0\.0\.2 is loopback/) });
  });

  test('an answer fetch cannot represent (status 999) fails the job, the service keeps serving', async () => {
    const h = await harness(['127.0.0.1/32']);
    const r = await h.call('/v1/tasks', { method: 'POST', json: task(`http://127.0.0.1:${port}/odd-status`) });
    const job = await settle(h, ((await r.json()) as Json).id as string);
    expect(job).toMatchObject({
      state: 'failed',
      error: {
        tag: 'Unavailable',
        message: expect.stringMatching(/unreachable/),
      },
    });
    expect((await h.call('/healthz')).status).toBe(200);
  });

  test('a wider allow-list lets the redirect through (the refusal was the guard, not the network)', async () => {
    const h = await harness(['127.0.0.0/8']);
    const r = await h.call('/v1/tasks?wait=10', { method: 'POST', json: task(`http://127.0.0.1:${port}/to-other`) });
    expect(r.status).toBe(201);
  });

  test('an allow-list entry that is not an address or CIDR fails the start', async () => {
    await expect(createServer({ policy: { allowNetworks: ['127.0.0.1/33', 'nope'] } })).rejects.toMatchObject({
      tag: 'InvalidEntry',
      message: expect.stringMatching(/127\.0\.0\.1\/33, nope/),
    });
  });
});
