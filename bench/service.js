// npm run bench:service: the task service (`lessl serve`, its own process) against the SDK in this
// process, on the same Docker engine, side by side in one run:
//  1. one-shot `echo` end to end: POST /v1/tasks?wait vs the SDK's run() of the same spec
//     (interleaved; median and p95; target <= 1.10x median);
//  2. 200 one-shot tasks from 50 concurrent clients vs the SDK running the same 200 at the same
//     concurrency limit (the service's --concurrency): throughput ratio (target >= 0.9x), p50/p99
//     latency of each side, and the count of 5xx answers (must be 0);
//  3. job admission without Docker (`lessl serve --memory`), autocannon: accepted POSTs/s (target >= 2000/s).
// Not a test: no timed assertions. Run Docker benchmarks one at a time (flock /tmp/lessl-docker.lock).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import autocannon from 'autocannon';
import Docker from 'dockerode';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { LesslClient, LesslError } from '@lessl/cli';
import { q, startServe, time } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const TASKS = Number(process.env.BENCH_TASKS ?? 200);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 50);
const LIMIT = Number(process.env.BENCH_LIMIT ?? 8);
const ADMIT_SECONDS = Number(process.env.BENCH_ADMIT_SECONDS ?? 10);
const ONLY = process.env.BENCH_ONLY; // 'docker' or 'admission'
const TOKEN = 'lsl_bench-admin-token-0123456789';
const docker = new Docker();

/** Starts `lessl serve` in its own process; answers its URL, registry instance and a stop function. */
const startService = (args) => startServe(['--port', '0', ...args], TOKEN);

const ms = (x) => `${x.toFixed(1).padStart(7)} ms`;

/** A semaphore of n. */
const limiter = (n) => {
  let free = n;
  const waiting = [];
  return async (fn) => {
    if (free > 0) free--;
    else await new Promise((r) => waiting.push(r));
    try {
      return await fn();
    } finally {
      const next = waiting.shift();
      if (next) next();
      else free++;
    }
  };
};

const spec = { version: 1.0, image: 'busybox', cmd: ['echo hello'] };
const out = [];
const print = (line) => (console.log(line), out.push(line));

// ---- 1 and 2: Docker ------------------------------------------------------------------
if (ONLY !== 'admission') {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-bench-svc-'));
  const svc = await startService(['--data', join(dir, 'data'), '--busybox', '--concurrency', String(LIMIT)]);
  const client = new LesslClient({ url: svc.url, token: TOKEN });
  const sdk = await unwrap(openDockerBackend());
  const IMAGE = 'image://local/busybox';
  await unwrap(sdk.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));

  let fivexx = 0;
  const viaService = async () => {
    let sub;
    try {
      sub = await client.submit(spec, { wait: 300 });
    } catch (e) {
      if (e instanceof LesslError && e.status >= 500) fivexx++;
      throw e;
    }
    const t = sub.kind === 'task' ? sub.task : undefined;
    if (t === undefined || t.exitCode !== 0 || t.commands[0]?.output !== 'hello\n')
      throw new Error(`service one-shot failed: ${JSON.stringify(sub)}`);
  };
  // the same spec through the SDK: the service runs each command with /bin/sh -c
  const viaSdk = async () => {
    const r = await unwrap(sdk.run({ image: IMAGE, spec: { cmd: ['/bin/sh', '-c', 'echo hello'] } }));
    if (r.exitCode !== 0 || text(r.stdout) !== 'hello\n') throw new Error(`SDK run failed: ${JSON.stringify(r)}`);
  };

  // 1. latency, interleaved
  const one = { svc: [], sdk: [] };
  await viaService();
  await viaSdk();
  for (let i = 0; i < RUNS; i++) {
    const pair = [async () => one.svc.push(await time(viaService)), async () => one.sdk.push(await time(viaSdk))];
    if (i % 2 === 1) pair.reverse();
    for (const p of pair) await p();
  }

  // 2. throughput: CLIENTS clients share TASKS tasks; the SDK side runs them at the service's limit
  const burst = async (runOne) => {
    const lat = [];
    let next = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (next < TASKS) {
          next++;
          lat.push(await time(runOne));
        }
      }),
    );
    return { wall: Number(process.hrtime.bigint() - t0) / 1e6, lat };
  };
  const gate = limiter(LIMIT);
  const sdkSide = await burst(() => gate(viaSdk));
  const svcSide = await burst(viaService);

  const version = (await docker.version()).Version;
  print(`Docker ${version}; node ${process.version}; service: lessl serve (own process), concurrency ${LIMIT}`);
  print('');
  const a = { median: q(one.svc, 0.5), p95: q(one.svc, 0.95) };
  const b = { median: q(one.sdk, 0.5), p95: q(one.sdk, 0.95) };
  print(
    `one-shot echo, ${RUNS} interleaved runs: POST /v1/tasks?wait median ${ms(a.median)} p95 ${ms(a.p95)} | SDK run() median ${ms(b.median)} p95 ${ms(b.p95)} | ratio median ${(a.median / b.median).toFixed(2)}x p95 ${(a.p95 / b.p95).toFixed(2)}x (target <= 1.10x)`,
  );
  const thr = (s) => (TASKS / s.wall) * 1000;
  print(
    `${TASKS} one-shot tasks, ${CLIENTS} clients, limit ${LIMIT}: service ${thr(svcSide).toFixed(1)} tasks/s (p50 ${ms(q(svcSide.lat, 0.5))}, p99 ${ms(q(svcSide.lat, 0.99))}) | SDK ${thr(sdkSide).toFixed(1)} tasks/s (p50 ${ms(q(sdkSide.lat, 0.5))}, p99 ${ms(q(sdkSide.lat, 0.99))}) | throughput ratio ${(thr(svcSide) / thr(sdkSide)).toFixed(2)}x (target >= 0.9x) | 5xx: ${fivexx} (must be 0)`,
  );

  await svc.stop();
  await sdk.close();
  await purge(docker, svc.registry);
  await purge(docker, sdk.instanceId);
  rmSync(dir, { recursive: true, force: true });
}

// ---- 3. admission without Docker ---------------------------------------------------------
// (a) pure admission: concurrency 1 and every task sleeps, so accepted jobs wait in the durable
//     queue; (b) admission while the queue drains: one-shot `true` tasks run as they are accepted.
const admit = async (label, concurrency, cmd) => {
  const svc = await startService(['--memory', '--concurrency', String(concurrency)]);
  const r = await autocannon({
    url: `${svc.url}/v1/tasks`,
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ image: 'busybox', cmd: [cmd] }),
    connections: 50,
    duration: ADMIT_SECONDS,
  });
  await svc.stop();
  const accepted = r.statusCodeStats['202']?.count ?? 0;
  const other = Object.entries(r.statusCodeStats)
    .filter(([code]) => code !== '202')
    .map(([code, st]) => `${code}: ${st.count}`)
    .join(', ');
  print(
    `job admission, ${label} (memory backend, autocannon, 50 connections, ${ADMIT_SECONDS} s): ${(accepted / ADMIT_SECONDS).toFixed(0)} accepted POSTs/s (target >= 2000/s), latency p50 ${r.latency.p50} ms p99 ${r.latency.p99} ms, errors ${r.errors}, timeouts ${r.timeouts}, other statuses: ${other === '' ? 'none' : other}`,
  );
};
if (ONLY !== 'docker') {
  await admit('into the queue (concurrency 1, tasks sleep)', 1, 'sleep 3600');
  await admit('while the queue drains (concurrency 4, one-shot true)', 4, 'true');
}
