// npm run bench:functions: functions against what they replace, side by side in one run, with
// ratios (docs/functions.md, docs/benchmarks.md). Not a test: no timed assertions anywhere.
//  1. a warm invocation of `echo hi` through the SDK (lessl-agent in a running container),
//     BENCH_CALLS (default 500) interleaved with dockerode's exec into a running container and
//     with the floor: the same fork, exec and wait of the same static busybox echo on the host,
//     by lessl-agent over pipes (and by Node's spawn, for reference); p50 and p99;
//     targets p50 <= 5 ms, p99 <= 20 ms;
//  2. the same over HTTP: POST /v1/functions/{name}/invoke to `lessl serve` (its own process) on
//     loopback, end to end; target p50 <= 10 ms;
//  3. throughput: BENCH_CLIENTS (default 50) concurrent HTTP clients invoking one per-function
//     function for BENCH_SECONDS (default 10): invocations/s (target >= 300) and errors (must be
//     0); and through the SDK with per-invocation reuse: the rate the pool sustains and its p99;
//  4. a cold invocation (no container ready) against a cold `run()` of the same command,
//     BENCH_COLD (default 10) interleaved: target <= 1.1x;
//  5. the standing cost of an idle function container: memory (docker stats) and CPU over 5 s.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { text, unwrap } from '@lessl/core';
import { BUSYBOX, busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { demux, hostConfig, localAgent, q, startServe, time } from './common.js';

const CALLS = Number(process.env.BENCH_CALLS ?? 500);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 50);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 10);
const COLD = Number(process.env.BENCH_COLD ?? 10);
const TOKEN = 'lsl_bench-admin-token-0123456789';
const docker = new Docker();
const out = [];
const print = (line) => (console.log(line), out.push(line));
const ms = (x) => `${x.toFixed(2)} ms`;
const pq = (xs) => `p50 ${ms(q(xs, 0.5))}, p99 ${ms(q(xs, 0.99))}`;
const ratio = (a, b) => `${(a / b).toFixed(2)}x`;
const expect = (cond, what) => {
  if (!cond) throw new Error(`bench: ${what}`);
};

const lessl = await unwrap(openDockerBackend());
const IMAGE = 'image://local/bench-functions';
const base = await unwrap(lessl.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));
const imageId = String(base.attributes.imageId);
const deploy = (name, extra = {}) =>
  unwrap(lessl.functions.deploy({ name, image: IMAGE, spec: { cmd: ['echo', 'hi'] }, ...extra }));
const invoke = async (name) => {
  const r = await unwrap(lessl.functions.invoke(name));
  expect(r.exitCode === 0 && text(r.stdout) === 'hi\n', `invocation failed: ${JSON.stringify(r)}`);
  return r;
};

// ---- 1. warm SDK invocations, docker exec, the host's floor, interleaved -------------------
await deploy('warm', { reuse: 'per-function', minContainers: 1 });
await invoke('warm');
const idle = await docker.createContainer({
  Image: imageId,
  Cmd: ['sh', '-c', 'while :; do sleep 3600; done'],
  Entrypoint: [],
  HostConfig: hostConfig,
});
await idle.start();
const exec = async () => {
  const ex = await idle.exec({ Cmd: ['echo', 'hi'], AttachStdout: true, AttachStderr: true, Tty: false });
  const o = Buffer.concat((await demux(await ex.start({ hijack: true, stdin: false }))).stdout).toString();
  expect((await ex.inspect()).ExitCode === 0 && o === 'hi\n', 'docker exec failed');
};
// the floor: the same static busybox echo forked, exec'd and waited for on the host by the agent
const bin = mkdtempSync(join(tmpdir(), 'lessl-bench-fn-bin-'));
symlinkSync(BUSYBOX, join(bin, 'echo'));
const local = localAgent(bin);
const floor = () => local.once();
const spawned = () =>
  new Promise((resolve, reject) => {
    const c = spawn(join(bin, 'echo'), ['hi'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.resume();
    c.on('error', reject);
    c.on('close', (code) => (code === 0 ? resolve() : reject(new Error('host echo failed'))));
  });
const sides = { sdk: [], exec: [], floor: [], spawn: [] };
for (let i = 0; i < CALLS; i++) {
  sides.sdk.push(await time(() => invoke('warm')));
  sides.exec.push(await time(exec));
  sides.floor.push(await time(floor));
  sides.spawn.push(await time(spawned));
}
local.close();
rmSync(bin, { recursive: true, force: true });
await idle.remove({ force: true });
const { Version: version } = await docker.version();
print(`Docker ${version}; node ${process.version}; ${CALLS} interleaved calls of echo hi`);
print(`1. warm invocation (SDK, agent):   ${pq(sides.sdk)} (targets p50 <= 5 ms, p99 <= 20 ms)`);
print(`   docker exec (dockerode):        ${pq(sides.exec)} | agent/exec at p50 ${ratio(q(sides.sdk, 0.5), q(sides.exec, 0.5))}`);
print(
  `   floor (the agent on the host):  ${pq(sides.floor)} | invocation/floor at p50 ${ratio(q(sides.sdk, 0.5), q(sides.floor, 0.5))}`,
);
print(`   (Node's spawn on the host:      ${pq(sides.spawn)})`);

// ---- 2 and 3. over HTTP: lessl serve in its own process ------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'lessl-bench-fn-'));
const svc = await startServe(['--port', '0', '--data', join(dir, 'data'), '--busybox'], TOKEN);
try {
  const api = (path, init = {}) =>
    globalThis.fetch(`${svc.url}${path}`, { ...init, headers: { authorization: `Bearer ${TOKEN}`, ...init.headers } });
  const put = await api('/v1/functions/hi', {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      image: 'busybox',
      argv: ['echo', 'hi'],
      reuse: 'per-function',
      concurrency: 8,
      max_containers: 4,
      min_containers: 1,
    }),
  });
  expect(put.status === 200 || put.status === 201, `PUT /v1/functions/hi answered ${put.status}: ${await put.text()}`);
  const httpInvoke = async () => {
    const r = await api('/v1/functions/hi/invoke', { method: 'POST', body: '' });
    const body = await r.text();
    if (r.status !== 200 || body !== 'hi\n' || r.headers.get('x-lessl-exit-code') !== '0')
      throw new Error(`invoke answered ${r.status}: ${body}`);
  };
  await httpInvoke();
  const http = [];
  for (let i = 0; i < CALLS; i++) http.push(await time(httpInvoke));
  print(`2. HTTP POST /v1/functions/hi/invoke (lessl serve, loopback): ${pq(http)} (target p50 <= 10 ms)`);

  let done = 0;
  let errors = 0;
  const until = Date.now() + SECONDS * 1000;
  const t0 = Date.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (Date.now() < until)
        await httpInvoke().then(
          () => done++,
          () => errors++,
        );
    }),
  );
  const rate = (done * 1000) / (Date.now() - t0);
  print(
    `3. ${CLIENTS} HTTP clients, one per-function function (concurrency 8, up to 4 containers), ${SECONDS} s: ${rate.toFixed(0)} invocations/s (target >= 300), errors ${errors} (must be 0)`,
  );
} finally {
  await svc.stop();
}

await deploy('each', { reuse: 'per-invocation', minContainers: 4, maxContainers: 8 });
await invoke('each');
await new Promise((r) => setTimeout(r, 3000));
const eachLat = [];
const eachUntil = Date.now() + SECONDS * 1000;
const e0 = Date.now();
await Promise.all(
  Array.from({ length: 8 }, async () => {
    while (Date.now() < eachUntil) eachLat.push(await time(() => invoke('each')));
  }),
);
const eachRate = (eachLat.length * 1000) / (Date.now() - e0);
print(
  `   per-invocation reuse (SDK, 8 clients, 4 kept ready, up to 8 containers): ${eachRate.toFixed(1)} invocations/s, ${pq(eachLat)} (bounded by container starts)`,
);

// ---- 4. cold invocation vs cold run() ---------------------------------------------------------
await deploy('cold', { reuse: 'per-invocation', minContainers: 0 });
const cold = { fn: [], run: [] };
for (let i = 0; i < COLD; i++) {
  cold.fn.push(
    await time(async () => {
      const r = await invoke('cold');
      expect(r.cold, 'a cold invocation found a container ready');
    }),
  );
  cold.run.push(
    await time(async () => {
      const r = await unwrap(lessl.run({ image: IMAGE, spec: { cmd: ['echo', 'hi'] } }));
      expect(r.exitCode === 0, 'cold run failed');
    }),
  );
  await new Promise((r) => setTimeout(r, 300));
}
print(
  `4. cold invocation: ${pq(cold.fn)} | cold run(): ${pq(cold.run)} | ratio at p50 ${ratio(q(cold.fn, 0.5), q(cold.run, 0.5))} (target <= 1.1x)`,
);

// ---- 5. standing cost of an idle function container ----------------------------------------------
const [c] = await docker.listContainers({ filters: { label: [`lessl.registry=${lessl.instanceId}`, 'lessl.function=warm@1'] } });
expect(c !== undefined, 'the warm function container is gone');
const stats = await docker.getContainer(c.Id).stats({ stream: false });
const cpu0 = stats.cpu_stats.cpu_usage.total_usage;
await new Promise((r) => setTimeout(r, 5000));
const later = await docker.getContainer(c.Id).stats({ stream: false });
const cpuMs = (later.cpu_stats.cpu_usage.total_usage - cpu0) / 1e6;
print(
  `5. an idle function container: memory ${(later.memory_stats.usage / 1024 / 1024).toFixed(2)} MiB, CPU ${cpuMs.toFixed(1)} ms over 5 s`,
);

const instance = lessl.instanceId;
await lessl.close();
await purge(docker, instance);
