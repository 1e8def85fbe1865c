// npm run bench:pool: the warm pool against the cold path and against plain dockerode, in one run.
//  1. one-shot `echo`: lessl.run() through the warm pool vs dockerode's exec into an already running
//     container (target <= 1.3x) vs lessl's cold one-shot run() (target: warm >= 4x faster);
//     medians of interleaved runs;
//  2. 20 concurrent one-shot tasks, with a pool of 20 vs cold: p50 and p99 of the task latencies;
//  3. the pool's standing cost: memory and CPU of N idle containers (docker stats), to size it.
// Not a test: no timed assertions anywhere.
import Docker from 'dockerode';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { demux, hostConfig, q, time } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 20);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const docker = new Docker();
const lessl = await unwrap(openDockerBackend());
const IMAGE = 'image://local/bench-pool';
const base = await unwrap(lessl.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));
const imageId = String(base.attributes.imageId);
const cmd = ['echo', 'out'];

const raw = await docker.createContainer({ Image: imageId, Cmd: ['sleep', '3600'], Entrypoint: [], HostConfig: hostConfig });
await raw.start();
const dockerodeExec = async () => {
  const ex = await raw.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false });
  const out = Buffer.concat((await demux(await ex.start({ hijack: true, stdin: false }))).stdout).toString();
  if ((await ex.inspect()).ExitCode !== 0 || out !== 'out\n') throw new Error('dockerode exec failed');
};
const lesslRun = async () => {
  const r = await unwrap(lessl.run({ image: IMAGE, spec: { cmd } }));
  if (r.exitCode !== 0 || text(r.stdout) !== 'out\n') throw new Error(`lessl run failed: ${JSON.stringify(r)}`);
};
let hits = 0;
const usePool = async (min) => {
  hits += lessl.pool.stats().hits; // a dropped profile takes its counts with it
  // the default cap (4 GiB of memory limits) holds 8 containers of the default 512 MiB limit
  await unwrap(lessl.pool.configure(min === 0 ? [] : [{ image: IMAGE, min, max: min }], { memoryCapBytes: 16 * 1024 ** 3 }));
};
/** Waits until the pool has `n` ready containers again (refills happen in the background). */
const refilled = async (n) => {
  for (let i = 0; i < 400 && (lessl.pool.stats().profiles[0]?.ready ?? 0) < n; i++) await new Promise((r) => setTimeout(r, 25));
  await new Promise((r) => setTimeout(r, 150)); // and the used container's removal, in the background, is over
};

// 1. warm vs exec vs cold, interleaved; the warm side waits for its refill outside the timing
const s = { warm: [], exec: [], cold: [] };
await dockerodeExec();
await usePool(2);
await lesslRun();
for (let i = 0; i < RUNS; i++) {
  const order = [
    async () => s.exec.push(await time(dockerodeExec)),
    async () => {
      await usePool(2);
      await refilled(2);
      s.warm.push(await time(lesslRun));
    },
    async () => {
      await usePool(0);
      s.cold.push(await time(lesslRun));
    },
  ];
  for (let j = 0; j < i % 3; j++) order.push(order.shift());
  for (const f of order) await f();
}

// 2. bursts of CONCURRENCY one-shot tasks: pool of CONCURRENCY vs cold
const burst = async () => Promise.all(Array.from({ length: CONCURRENCY }, () => time(lesslRun)));
const b = { warm: [], cold: [] };
for (let i = 0; i < ROUNDS; i++) {
  await usePool(CONCURRENCY);
  await refilled(CONCURRENCY);
  b.warm.push(...(await burst()));
  await usePool(0);
  b.cold.push(...(await burst()));
}

// 3. standing cost of N idle containers
await usePool(CONCURRENCY);
await refilled(CONCURRENCY);
await new Promise((r) => setTimeout(r, 2000));
const pooled = await docker.listContainers({ filters: { label: [`lessl.registry=${lessl.registry.instanceId}`, 'lessl.pool'] } });
let mem = 0;
let cpu = 0;
for (const c of pooled) {
  const st = await docker.getContainer(c.Id).stats({ stream: false });
  mem += st.memory_stats.usage ?? 0;
  const dc = st.cpu_stats.cpu_usage.total_usage - st.precpu_stats.cpu_usage.total_usage;
  const ds = st.cpu_stats.system_cpu_usage - (st.precpu_stats.system_cpu_usage ?? 0);
  if (ds > 0) cpu += (dc / ds) * (st.cpu_stats.online_cpus ?? 1) * 100;
}
const w = q(s.warm, 0.5);
const e = q(s.exec, 0.5);
const c = q(s.cold, 0.5);
console.log(`Docker ${(await docker.version()).Version}; ${RUNS} interleaved runs; ${ROUNDS} bursts of ${CONCURRENCY}\n`);
console.log(
  `one-shot echo, median: warm pool ${w.toFixed(1)} ms | dockerode exec into a running container ${e.toFixed(1)} ms | cold run() ${c.toFixed(1)} ms`,
);
console.log(
  `  warm / dockerode exec = ${(w / e).toFixed(2)}x (target <= 1.3x);  cold / warm = ${(c / w).toFixed(2)}x faster (target >= 4x)`,
);
console.log(
  `${CONCURRENCY} concurrent one-shot tasks: warm p50 ${q(b.warm, 0.5).toFixed(1)} ms p99 ${q(b.warm, 0.99).toFixed(1)} ms | cold p50 ${q(b.cold, 0.5).toFixed(1)} ms p99 ${q(b.cold, 0.99).toFixed(1)} ms  (pool hits ${hits})`,
);
console.log(
  `standing cost of ${pooled.length} idle warm containers: ${(mem / 1024 / 1024).toFixed(1)} MiB memory in all (${(mem / 1024 / 1024 / Math.max(1, pooled.length)).toFixed(2)} MiB each), ${cpu.toFixed(2)}% of one CPU in all`,
);

await raw.remove({ force: true });
await lessl.close();
await purge(docker, lessl.registry.instanceId);
