/**
 * The container image of the service (deploy/Dockerfile, built by scripts/image.sh with no
 * network): the service runs in a container on the root engine (host network, a free port, the
 * engine's socket mounted and reached through its group, a data volume, the admin token from the
 * environment); the image's HEALTHCHECK reports it healthy; the seed-001 example runs through it
 * with the host's `lessl` CLI, its output and exit code as on the host; a restart keeps the task
 * (the data volume); the service runs as uid 10001. Everything it made is removed at the end,
 * except the image (cached). With TLS flags, the health check asks over https.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { purge } from '@lessl/docker';
import { lessl, SEED_EXAMPLE } from '../packages/cli/test/harness.js';
import { selfSigned } from '../packages/service/test/helpers.js';
import { buildImage, docker, freePort, until } from './image-support.js';

const TOKEN = 'lsl_image-test-admin-token-0123456789';
const NAME = `lessl-image-test-${process.pid}`;
const VOLUME = `${NAME}-data`;
let tag = '';
let url = '';
let instance = '';
let dir = '';

/** The container's health status; until it is `healthy` (bounded), with the health log when it is not. */
const healthy = (): Promise<string> =>
  until(
    `the container ${NAME} reports healthy`,
    60_000,
    async () => ((await docker(['inspect', '--format', '{{.State.Health.Status}}', NAME])) === 'healthy' ? 'healthy' : undefined),
    async () =>
      `${await docker(['inspect', '--format', '{{.State.Status}} {{json .State.Health}}', NAME]).catch(String)}\n${await logs()}`,
  );
const logs = (): Promise<string> => docker(['logs', '--tail', '20', NAME]).catch(String);

beforeAll(async () => {
  tag = await buildImage();
  dir = mkdtempSync(join(tmpdir(), 'lessl-image-'));
  const port = await freePort();
  const gid = statSync('/var/run/docker.sock').gid;
  // as docs/deploy.md runs it; a short health interval only so that the test need not wait 10 s
  await docker(['volume', 'create', VOLUME]);
  await docker([
    ...['run', '-d', '--name', NAME, '--network', 'host', '--group-add', String(gid), '--health-interval', '1s'],
    ...[
      '-v',
      '/var/run/docker.sock:/var/run/docker.sock',
      '-v',
      `${VOLUME}:/var/lib/lessl`,
      '-v',
      '/bin/busybox:/bin/busybox:ro',
    ],
    ...['-e', `LESSL_ADMIN_TOKEN=${TOKEN}`, tag, '--port', String(port), '--busybox', '--json'],
  ]);
  url = `http://127.0.0.1:${port}`;
  await healthy();
  instance = (JSON.parse((await docker(['logs', NAME])).split('\n')[0] ?? '{}') as { registry?: string }).registry ?? '';
}, 400_000);

afterAll(async () => {
  await docker(['rm', '-f', NAME]).catch(() => undefined);
  await docker(['volume', 'rm', '-f', VOLUME]).catch(() => undefined);
  if (instance !== '') await purge(new Docker(), instance);
  if (dir !== '') rmSync(dir, { recursive: true, force: true });
});

test('the image is small next to its Node base and runs the service as uid 10001 (not root)', async () => {
  expect(await docker(['exec', NAME, 'node', '-e', 'console.log(process.getuid(), process.getgid())'])).toBe('10001 10001');
  expect(await docker(['inspect', '--format', '{{.Config.User}}', tag])).toBe('10001:10001');
  const size = (ref: string) => docker(['image', 'inspect', '--format', '{{.Size}}', ref]).then(Number);
  const base = await docker(['image', 'inspect', '--format', '{{index .Config.Labels "lessl.node-version"}}', tag]);
  expect(base).toBe(process.version); // the base is the host's node (scripts/node-base.sh)
  expect((await size(tag)) - (await size('lessl/node-base:20'))).toBeLessThan(60 << 20);
});

test('the seed-001 example through the containerised service: output and exit code; a restart keeps the task', async () => {
  const file = join(dir, 'seed.json');
  writeFileSync(file, JSON.stringify(SEED_EXAMPLE));
  const r = await lessl(['run', file], { url, token: TOKEN });
  expect(r, r.stderr).toMatchObject({ code: 7, stdout: 'Hello World\nvalue in /opt\n' });
  const ps = await lessl(['--json', 'ps'], { url, token: TOKEN });
  const before = (JSON.parse(ps.stdout) as { id: string; task_name?: string }[]).map((t) => t.id);
  expect(before).toHaveLength(1);

  await docker(['restart', '--time', '20', NAME]);
  await healthy();
  const after = await lessl(['--json', 'ps'], { url, token: TOKEN });
  expect(
    (JSON.parse(after.stdout) as { id: string }[]).map((t) => t.id),
    after.stderr,
  ).toEqual(before);
  const out = await lessl(['logs', before[0] ?? ''], { url, token: TOKEN });
  expect(out).toMatchObject({ code: 0, stdout: 'Hello World\nvalue in /opt\n' });
}, 120_000);

test('with --tls-cert/--tls-key the service answers https in its container and the health check follows it', async () => {
  const tls = mkdtempSync(join(tmpdir(), 'lessl-image-tls-'));
  const name = `${NAME}-tls`;
  try {
    const pem = selfSigned(tls);
    chmodSync(tls, 0o755);
    chmodSync(pem.key, 0o644); // readable by uid 10001 in the container
    const port = await freePort();
    await docker([
      ...['run', '-d', '--name', name, '--network', 'host', '--health-interval', '1s', '-v', `${tls}:/etc/lessl/tls:ro`, tag],
      ...['--memory', '--port', String(port), '--tls-cert', '/etc/lessl/tls/tls.crt', '--tls-key', '/etc/lessl/tls/tls.key'],
    ]);
    await until(`the container ${name} reports healthy`, 60_000, async () =>
      (await docker(['inspect', '--format', '{{.State.Health.Status}}', name])) === 'healthy' ? true : undefined,
    );
    const status = await new Promise<number | undefined>((resolve, reject) =>
      httpsGet(`https://127.0.0.1:${port}/healthz`, { ca: readFileSync(pem.cert) }, (res) => resolve(res.resume().statusCode)).on(
        'error',
        reject,
      ),
    );
    expect(status).toBe(200);
  } finally {
    await docker(['rm', '-f', '-v', name]).catch(() => undefined);
    rmSync(tls, { recursive: true, force: true });
  }
});
