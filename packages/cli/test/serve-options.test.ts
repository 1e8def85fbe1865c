/**
 * `lessl serve` durability and retention settings, `--memory --data` on disk, and TLS (real
 * processes on loopback).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { expect, test } from 'vitest';
import { selfSigned } from '../../service/test/helpers.js';
import { ADMIN_TOKEN, BIN, lessl } from './harness.js';

type Json = Record<string, string>;

/** Starts `lessl --json serve ...args`; answers its ready line and a stop that answers the exit code. */
const serve = async (args: readonly string[]): Promise<{ ready: Json; stop: () => Promise<number | null> }> => {
  const child = spawn(process.execPath, [BIN, '--json', 'serve', '--port', '0', ...args], {
    env: { ...process.env, LESSL_ADMIN_TOKEN: ADMIN_TOKEN },
  });
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const ready = await new Promise<Json>((resolve) =>
    createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Json)),
  );
  return { ready, stop: () => (child.kill('SIGTERM'), exited) };
};

test('--durability and the retention windows are checked: a bad value stops the start naming it', async () => {
  const bad = await lessl(['serve', '--memory', '--port', '0', '--durability', 'fsync']);
  expect(bad.code).not.toBe(0);
  expect(bad.stderr).toMatch(/durability/);
  const negative = await lessl(['serve', '--memory', '--port', '0', '--retain-events', '-1']);
  expect(negative.code).not.toBe(0);
  expect(negative.stderr).toMatch(/--retain-events/);
  const cfg = join(mkdtempSync(join(tmpdir(), 'lessl-cfg-')), 'c.json');
  writeFileSync(cfg, JSON.stringify({ retention: { tasks: 'a day' } }));
  const fromFile = await lessl(['serve', '--memory', '--port', '0', '--config', cfg]);
  expect(fromFile.code).not.toBe(0);
  expect(fromFile.stderr).toMatch(/retention\.tasks must be a number of seconds/);
});

test('--memory --data keeps the records and the registry on disk: a restart has the same registry and users', async () => {
  const data = mkdtempSync(join(tmpdir(), 'lessl-serve-'));
  const args = ['--memory', '--data', data, '--retain-tasks', '60', '--durability', 'disk'];
  const a = await serve(args);
  const tok = (await lessl(['users', 'add', 'zed'], { url: a.ready.url, token: ADMIN_TOKEN })).stdout.trim();
  expect(tok).toMatch(/^lsl_/);
  expect(await a.stop()).toBe(0);
  const b = await serve(args);
  expect(b.ready.registry).toBe(a.ready.registry);
  expect((await lessl(['--json', 'users', 'ls'], { url: b.ready.url, token: ADMIN_TOKEN })).stdout).toMatch(/"zed"/);
  expect(await b.stop()).toBe(0);
});

test('--tls-cert and --tls-key serve https: the printed URL is https and answers trusting the certificate', async () => {
  const pem = selfSigned(mkdtempSync(join(tmpdir(), 'lessl-tls-')), 'serve');
  const s = await serve(['--memory', '--tls-cert', pem.cert, '--tls-key', pem.key]);
  expect(s.ready.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  const status = await new Promise<number | undefined>((resolve, reject) =>
    httpsGet(`${s.ready.url}/healthz`, { ca: readFileSync(pem.cert) }, (res) => resolve(res.resume().statusCode)).on(
      'error',
      reject,
    ),
  );
  expect(status).toBe(200);
  expect(await s.stop()).toBe(0);
});

test('the TLS flags are both or neither, their files must be readable and a matching pair: else the start stops naming the flag', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-tls-'));
  const [a, b] = [selfSigned(dir, 'a'), selfSigned(dir, 'b')];
  const start = (...args: string[]) => lessl(['serve', '--memory', '--port', '0', ...args]);
  const lone = await start('--tls-cert', a.cert);
  expect(lone.code).not.toBe(0);
  expect(lone.stderr).toMatch(/--tls-cert needs --tls-key/);
  expect((await start('--tls-key', a.key)).stderr).toMatch(/--tls-key needs --tls-cert/);
  const missing = await start('--tls-cert', join(dir, 'absent.crt'), '--tls-key', a.key);
  expect(missing.code).not.toBe(0);
  expect(missing.stderr).toMatch(/--tls-cert .*absent\.crt: .*ENOENT/);
  const mismatched = await start('--tls-cert', a.cert, '--tls-key', b.key);
  expect(mismatched.code).not.toBe(0);
  expect(mismatched.stderr).toMatch(/--tls-cert .* and --tls-key .* are not a usable pair/);
  expect(mismatched.stderr).not.toMatch(/\n\s+at /); // no stack trace
});

test("the config file's docker section (swarm, directPorts) is decoded strictly: an unknown key or a bad value stops the start naming it", async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-cfg-'));
  const start = (config: unknown, ...args: string[]) => {
    const file = join(dir, `c${Math.random().toString(36).slice(2)}.json`);
    writeFileSync(file, JSON.stringify(config));
    return lessl(['serve', '--port', '0', '--config', file, ...args]);
  };
  const cases: [unknown, RegExp][] = [
    [{ docker: { swarm: { registry: '10.99.0.1:5000', replicas: 2 } } }, /unknown docker\.swarm\.replicas/],
    [{ docker: { swarm: { registry: 'not a registry' } } }, /bad docker\.swarm\.registry/],
    [{ docker: { swarm: {} } }, /docker\.swarm\.registry/],
    [{ docker: { swarm: { registry: 'r:5000', constraints: ['anywhere'] } } }, /bad docker\.swarm\.constraints/],
    [{ docker: { socket: '/x.sock' } }, /unknown docker\.socket/],
    [{ docker: { directPorts: 'no' } }, /bad docker\.directPorts/],
    [{ dockr: {} }, /unknown keys dockr/],
  ];
  for (const [config, why] of cases) {
    const r = await start(config);
    expect(r.code, JSON.stringify(config)).not.toBe(0);
    expect(r.stderr).toMatch(why);
  }
  const memory = await start({ docker: { swarm: { registry: 'r:5000' } } }, '--memory');
  expect(memory.code).not.toBe(0);
  expect(memory.stderr).toMatch(/docker\.swarm needs the Docker backend \(not --memory\)/);
  const ports = await start({ docker: { directPorts: false } }, '--memory');
  expect(ports.code).not.toBe(0);
  expect(ports.stderr).toMatch(/docker\.directPorts needs the Docker backend \(not --memory\)/);
});

test('LESSL_ADMIN_TOKEN_FILE: the admin token read from a file (a secret); with LESSL_ADMIN_TOKEN too, or empty, the start stops', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-secret-'));
  const file = join(dir, 'admin_token');
  writeFileSync(file, 'lsl_from-a-secret-file-0123456789\n');
  const start = (env: NodeJS.ProcessEnv) => {
    const child = spawn(process.execPath, [BIN, '--json', 'serve', '--memory', '--port', '0'], {
      env: { ...process.env, LESSL_ADMIN_TOKEN: '', ...env },
    });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const exited = new Promise<{ code: number | null; stderr: string }>((resolve) =>
      child.on('close', (code) => resolve({ code, stderr })),
    );
    const ready = new Promise<Json>((resolve) =>
      createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Json)),
    );
    return { child, exited, ready };
  };
  const s = start({ LESSL_ADMIN_TOKEN_FILE: file });
  const { url } = await s.ready;
  const ls = await lessl(['--json', 'users', 'ls'], { url, token: 'lsl_from-a-secret-file-0123456789' });
  expect(ls.code, ls.stderr).toBe(0);
  s.child.kill('SIGTERM');
  expect((await s.exited).code).toBe(0);

  const both = await start({ LESSL_ADMIN_TOKEN_FILE: file, LESSL_ADMIN_TOKEN: ADMIN_TOKEN }).exited;
  expect(both.code).not.toBe(0);
  expect(both.stderr).toMatch(/LESSL_ADMIN_TOKEN is set too/);
  writeFileSync(file, '\n');
  expect((await start({ LESSL_ADMIN_TOKEN_FILE: file }).exited).stderr).toMatch(/the file is empty/);
  expect((await start({ LESSL_ADMIN_TOKEN_FILE: join(dir, 'absent') }).exited).stderr).toMatch(/LESSL_ADMIN_TOKEN_FILE .*ENOENT/);
});
