// npm run bench:deploy: the task service in its container (deploy/Dockerfile, built by
// scripts/image.sh; host network, the engine's socket mounted) against `lessl serve` on the host,
// on the same Docker engine, with the same flags: POST /v1/tasks?wait of a one-shot busybox `echo`,
// end to end, the two interleaved; p50 and p99 of each and the container's ratio (target <= 1.05x
// at p50). Not a test: no timed assertions. Run Docker benchmarks one at a time
// (flock /tmp/lessl-docker.lock npm run bench:deploy).
/* global fetch */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { purge } from '@lessl/docker';
import { q, startServe, time } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 40);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 5);
const TOKEN = 'lsl_bench-deploy-admin-token-0123456789';
const NAME = `lessl-bench-deploy-${process.pid}`;
const root = fileURLToPath(new URL('..', import.meta.url));
const docker = (...args) => execFileSync('docker', args, { encoding: 'utf8' }).trim();
const ms = (x) => `${x.toFixed(1).padStart(7)} ms`;

/** A TCP port free on loopback now. */
const freePort = () =>
  new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** Until `url`/healthz answers 200 (at most 60 s). */
const ready = async (url) => {
  for (const end = Date.now() + 60_000; Date.now() < end; await new Promise((r) => setTimeout(r, 200)))
    if (
      await fetch(`${url}/healthz`).then(
        (r) => r.ok,
        () => false,
      )
    )
      return;
  throw new Error(`${url} did not answer /healthz within 60 s: ${docker('logs', '--tail', '20', NAME)}`);
};

/** The service's container on `port` (as docs/deploy.md runs it, plus --busybox from the host's /bin/busybox). */
const startContainer = async (tag, port) => {
  docker(
    ...['run', '-d', '--name', NAME, '--network', 'host', '--group-add', String(statSync('/var/run/docker.sock').gid)],
    ...['-v', '/var/run/docker.sock:/var/run/docker.sock', '-v', `${NAME}:/var/lib/lessl`, '-v', '/bin/busybox:/bin/busybox:ro'],
    ...['-e', `LESSL_ADMIN_TOKEN=${TOKEN}`, tag, '--port', String(port), '--busybox', '--json'],
  );
  const url = `http://127.0.0.1:${port}`;
  await ready(url);
  return { url, registry: JSON.parse(docker('logs', NAME).split('\n')[0]).registry };
};

/** POST /v1/tasks?wait of the one-shot spec; throws unless it exited 0. */
const submit = async (url) => {
  const r = await fetch(`${url}/v1/tasks?wait=60`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ version: 1.0, image: 'busybox', cmd: ['echo hello'] }),
  });
  const t = await r.json();
  if (t.state !== 'exited' || t.exitCode !== 0) throw new Error(`${url}: ${JSON.stringify(t)}`);
};

const tag = execFileSync('bash', [join(root, 'scripts', 'image.sh'), 'lessl/lessl:bench'], { encoding: 'utf8' }).trim();
const dir = mkdtempSync(join(tmpdir(), 'lessl-bench-deploy-'));
const host = await startServe(['--port', String(await freePort()), '--data', join(dir, 'data'), '--busybox'], TOKEN);
let boxed;
try {
  boxed = await startContainer(tag, await freePort());
  const sides = { container: [], host: [] };
  for (let i = 0; i < WARMUP; i++) {
    await submit(boxed.url);
    await submit(host.url);
  }
  for (let i = 0; i < RUNS; i++) {
    // interleaved, the first of each pair alternating
    const order = i % 2 === 0 ? ['container', 'host'] : ['host', 'container'];
    for (const side of order) sides[side].push(await time(() => submit(side === 'host' ? host.url : boxed.url)));
  }
  console.log(`POST /v1/tasks?wait, one-shot busybox echo, ${RUNS} runs each, interleaved (node ${process.version})`);
  for (const side of ['host', 'container'])
    console.log(`  ${side.padEnd(9)}  p50 ${ms(q(sides[side], 0.5))}  p99 ${ms(q(sides[side], 0.99))}`);
  const ratio = q(sides.container, 0.5) / q(sides.host, 0.5);
  console.log(`  container / host at p50: ${ratio.toFixed(3)}x (target <= 1.05x)`);
} finally {
  await host.stop();
  execFileSync('docker', ['rm', '-f', NAME], { stdio: 'ignore' });
  execFileSync('docker', ['volume', 'rm', '-f', NAME], { stdio: 'ignore' });
  const engine = new Docker();
  await purge(engine, host.registry);
  if (boxed !== undefined) await purge(engine, boxed.registry);
  rmSync(dir, { recursive: true, force: true });
}
