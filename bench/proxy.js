// npm run bench:proxy: the latency of a request to a daemon through the service's proxy against the
// same request to busybox httpd run directly on the host, on loopback, interleaved:
//  (a) `busybox httpd -f -p 127.0.0.1:PORT -h DIR` on the host, serving a small file;
//  (b) the same httpd in a daemon task (`lessl serve`, its own process, the Docker engine), the
//      file given as a resource, reached at /v1/tasks/{id}/ports/8080/index.html with a token.
// p50 and p99 of each and the ratio (target <= 1.5x at p50). BENCH_BACKEND=memory runs (b) on
// `lessl serve --memory` instead (the tiny shell's fake httpd: no Docker; for developing the proxy).
// Not a test: no timed assertions. Run Docker benchmarks one at a time (flock /tmp/lessl-docker.lock).
/* global fetch */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, get } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { purge } from '@lessl/docker';
import { q, startServe } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 1000);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 50);
const BACKEND = process.env.BENCH_BACKEND ?? 'docker';
const TOKEN = 'lsl_bench-admin-token-0123456789';
const PAGE = `<html><body>${'lessl '.repeat(80)}</body></html>\n`; // about 500 bytes

const ms = (x) => `${x.toFixed(3).padStart(8)} ms`;

/** One GET: answers the milliseconds to the end of the body (and checks the status). */
const once = (url, headers, agent) =>
  new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    get(url, { headers, agent }, (res) => {
      res.resume();
      res.on('end', () =>
        res.statusCode === 200
          ? resolve(Number(process.hrtime.bigint() - t0) / 1e6)
          : reject(new Error(`${url}: ${res.statusCode}`)),
      );
    }).on('error', reject);
  });

/** busybox httpd on the host, on a free loopback port; answers its URL and a stop function. */
const hostHttpd = async (dir) => {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const p = spawn('busybox', ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', dir], { stdio: 'ignore' });
  const url = `http://127.0.0.1:${port}/index.html`;
  for (let i = 0; ; i++) {
    try {
      await once(url, {}, undefined);
      break;
    } catch (e) {
      if (i > 100) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { url, stop: () => p.kill() };
};

/** A daemon task serving the page through the service; answers its proxied URL. */
const daemonTask = async (svc) => {
  const auth = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
  const spec = {
    image: 'busybox',
    daemon: true,
    ports: [8080],
    resources: [{ content_type: 'text/html', data: PAGE, dest: '/www/index.html' }],
    cmd: ['httpd -p 8080 -h /www'],
  };
  const r = await fetch(`${svc.url}/v1/tasks`, { method: 'POST', headers: auth, body: JSON.stringify(spec) });
  if (r.status !== 202) throw new Error(`submit: ${r.status} ${await r.text()}`);
  const task = (await r.json()).tasks[0];
  const url = `${svc.url}/v1/tasks/${task}/ports/8080/index.html`;
  for (let i = 0; ; i++) {
    const p = await fetch(url, { headers: auth });
    await p.arrayBuffer();
    if (p.status === 200) return url;
    if (i > 600) throw new Error(`task ${task} does not serve: ${p.status}`);
    await new Promise((res) => setTimeout(res, 100));
  }
};

const dir = mkdtempSync(join(tmpdir(), 'lessl-bench-proxy-'));
mkdirSync(join(dir, 'www'));
writeFileSync(join(dir, 'www', 'index.html'), PAGE);
const host = await hostHttpd(join(dir, 'www'));
const args = BACKEND === 'memory' ? ['--memory'] : ['--data', join(dir, 'data'), '--busybox'];
const svc = await startServe(['--port', '0', '--concurrency', '4', ...args], TOKEN);
try {
  const proxied = await daemonTask(svc);
  // clients keep their connections to the service (as a browser does); busybox httpd closes each one
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  const headers = { authorization: `Bearer ${TOKEN}` };
  const direct = [];
  const viaProxy = [];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const d = await once(host.url, {}, agent);
    const p = await once(proxied, headers, agent);
    if (i < WARMUP) continue;
    direct.push(d);
    viaProxy.push(p);
  }
  const ratio = q(viaProxy, 0.5) / q(direct, 0.5);
  console.log(`proxy latency (${BACKEND}), ${RUNS} GETs of a ${PAGE.length}-byte file each, interleaved:`);
  console.log(`  busybox httpd on the host   p50 ${ms(q(direct, 0.5))}  p99 ${ms(q(direct, 0.99))}`);
  console.log(`  through the service proxy   p50 ${ms(q(viaProxy, 0.5))}  p99 ${ms(q(viaProxy, 0.99))}`);
  console.log(`  ratio at p50 ${ratio.toFixed(2)}x (target <= 1.5x)`);
  agent.destroy();
} finally {
  host.stop();
  await svc.stop();
  if (BACKEND !== 'memory') await purge(new Docker(), svc.registry);
  rmSync(dir, { recursive: true, force: true });
}
