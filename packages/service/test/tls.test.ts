/**
 * TLS termination (`tls` of `createServer`): a self-signed certificate made at test time with
 * openssl; requests over https trusting it, plain http refused, a mismatched key refused at start.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer, type LesslServer } from '@lessl/service';
import { ADMIN_TOKEN, selfSigned } from './helpers.js';

/** GET `url` (http or https, trusting `ca`); answers the status and body. */
const get = (url: string, o: { ca?: string; token?: string } = {}): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    const headers = o.token === undefined ? {} : { authorization: `Bearer ${o.token}` };
    const send = url.startsWith('https:') ? httpsRequest : httpRequest;
    const req = send(url, { headers, ...(o.ca === undefined ? {} : { ca: o.ca }) }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject).end();
  });

const dir = mkdtempSync(join(tmpdir(), 'lessl-tls-'));
const pem = selfSigned(dir);
const ca = readFileSync(pem.cert, 'utf8');
let server: LesslServer;
let url: string;

beforeAll(async () => {
  const backend = await unwrap(openMemoryBackend({ authorize: ownerAuthorizer }));
  server = await createServer({
    backend,
    adminToken: ADMIN_TOKEN,
    tls: { cert: readFileSync(pem.cert), key: readFileSync(pem.key, 'utf8') },
  });
  url = await server.listen();
  return async () => {
    await server.close();
    await backend.close();
  };
});

test('with tls the service answers https: /healthz and an authenticated route, trusting its certificate', async () => {
  expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  expect((await get(`${url}/healthz`, { ca })).status).toBe(200);
  const users = await get(`${url}/v1/users`, { ca, token: ADMIN_TOKEN });
  expect(users.status).toBe(200);
  expect((await get(`${url}/v1/users`, { ca })).status).toBe(401);
});

test('a client that does not trust the certificate, or speaks plain http to the port, gets nothing', async () => {
  await expect(get(`${url}/healthz`)).rejects.toThrow(/self[- ]signed/i);
  const plain = url.replace(/^https:/, 'http:');
  await expect(get(`${plain}/healthz`)).rejects.toThrow(/socket hang up|ECONNRESET/);
});

test('a key that is not the certificate’s, or a PEM that is not one, is refused at start naming tls', async () => {
  const other = selfSigned(dir, 'other');
  const mismatched = createServer({ tls: { cert: readFileSync(pem.cert), key: readFileSync(other.key) } });
  await expect(mismatched).rejects.toThrow(/tls: the certificate and key are not a usable pair/);
  await expect(createServer({ tls: { cert: 'not a pem', key: 'nor this' } })).rejects.toThrow(/^tls: /);
});
