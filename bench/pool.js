// npm run bench:pool: the warm pool against the cold path and against plain dockerode, in one run
// (the warm pool's figures, docs/pool.md). Not a test: no timed assertions anywhere.
//  1. one-shot `echo`, BENCH_RUNS (default 30) interleaved runs, medians and p95:
//     - lessl.run() through the warm pool (end to end: task record, commit, exec, end, clean-up);
//     - dockerode's exec into an already running container (exec create, start with the attach,
//       demultiplex, inspect: the calls lessl's warm path makes), target warm / exec <= 1.3x;
//     - lessl's cold one-shot run() (container created and started), target cold / warm >= 4x;
//     - dockerode's unpause + exec into a paused container (what a paused pool would add to the
//       hot path);
//  2. BENCH_ROUNDS (default 3) bursts of BENCH_CONCURRENCY (default 20) concurrent one-shot tasks,
//     with a pool of as many vs cold: p50 and p99 of the task latencies (and dockerode's exec into
//     as many running containers at once, for reference);
//  3. the standing cost of BENCH_CONCURRENCY idle warm containers, running and paused: memory
//     (docker stats) and CPU over 5 s (docker stats, and the engine's shim per container).
import { readdirSync, readFileSync } from 'node:fs';
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
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// dockerode's side: containers started like the pool's (same image, settings and idle command)
const idle = async () => {
  const c = await docker.createContainer({
    Image: imageId,
    Cmd: ['sh', '-c', 'while :; do sleep 3600; done'],
    Entrypoint: [],
    HostConfig: hostConfig,
  });
  await c.start();
  return c;
};
const raw = await idle();
const frozen = await idle();
const exec = async (c) => {
  const ex = await c.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false });
  const out = Buffer.concat((await demux(await ex.start({ hijack: true, stdin: false }))).stdout).toString();
  if ((await ex.inspect()).ExitCode !== 0 || out !== 'out\n') throw new Error('dockerode exec failed');
};
const lesslRun = async () => {
  const r = await unwrap(lessl.run({ image: IMAGE, spec: { cmd } }));
  if (r.exitCode !== 0 || text(r.stdout) !== 'out\n') throw new Error(`lessl run failed: ${JSON.stringify(r)}`);
};
let hits = 0;
let misses = 0;
const usePool = async (min) => {
  const st = lessl.pool.stats(); // a dropped profile takes its counts with it
  hits += st.hits;
  misses += st.misses;
  // the default cap (4 GiB of memory limits) holds 8 containers of the default 512 MiB limit
  await unwrap(lessl.pool.configure(min === 0 ? [] : [{ image: IMAGE, min, max: min }], { memoryCapBytes: 64 * 1024 ** 3 }));
};
/** The pool's containers (ready ones, and any used one still being removed). */
const pooled = () =>
  docker.listContainers({ all: true, filters: { label: [`lessl.registry=${lessl.instanceId}`, 'lessl.pool'] } });
/** Waits until the pool has `n` ready containers and nothing else (used ones removed), then lets the engine settle. */
const refilled = async (n) => {
  for (let i = 0; i < 800; i++) {
    if ((lessl.pool.stats().profiles[0]?.ready ?? 0) >= n && (await pooled()).length === n) break;
    await sleep(25);
  }
  await sleep(100);
};

// 1. warm vs exec vs cold vs unpause+exec, interleaved (the order rotates); the pool's refills and
//    removals happen outside every timing (as an idle moment between tasks would allow), so that
//    they slow neither side
const s = { warm: [], exec: [], cold: [], unpause: [] };
await exec(raw);
await usePool(2);
await lesslRun();
for (let i = 0; i < RUNS; i++) {
  const order = [
    async () => s.exec.push(await time(() => exec(raw))),
    async () => {
      await usePool(2);
      await refilled(2);
      s.warm.push(await time(lesslRun));
      await refilled(2); // the used container's removal and the refill do not overlap the next side
    },
    async () => {
      await usePool(0);
      s.cold.push(await time(lesslRun));
    },
    async () => {
      await frozen.pause();
      await sleep(50);
      s.unpause.push(
        await time(async () => {
          await frozen.unpause();
          await exec(frozen);
        }),
      );
    },
  ];
  for (let j = 0; j < i % order.length; j++) order.push(order.shift());
  for (const f of order) await f();
}

// 2. bursts of CONCURRENCY one-shot tasks: pool of CONCURRENCY vs cold
//    (and, for reference, dockerode's exec into as many running containers at once)
const burst = async () => Promise.all(Array.from({ length: CONCURRENCY }, () => time(lesslRun)));
const b = { warm: [], cold: [], exec: [] };
const many = [];
for (let i = 0; i < CONCURRENCY; i++) many.push(await idle());
for (let i = 0; i < ROUNDS; i++) {
  b.exec.push(...(await Promise.all(many.map((m) => time(() => exec(m))))));
  await usePool(CONCURRENCY);
  await refilled(CONCURRENCY);
  b.warm.push(...(await burst()));
  await usePool(0);
  b.cold.push(...(await burst()));
}

for (const m of many) await m.remove({ force: true });

// 3. standing cost of CONCURRENCY idle warm containers, running, then paused
await usePool(CONCURRENCY);
await refilled(CONCURRENCY);
const ids = (await pooled()).map((c) => c.Id);
/** The engine's shim process of each container (same machine only): pid by container ID. */
const shims = () => {
  const out = new Map();
  for (const p of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const args = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      const at = args.indexOf('-id');
      if (args[0]?.includes('containerd-shim') && at >= 0 && ids.includes(args[at + 1])) out.set(args[at + 1], p);
    } catch {
      // gone, or not ours to read
    }
  }
  return out;
};
const procCpu = (pid) => {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100 per second)
};
/** Proportional set size: shared pages (the shim's binary) divided among the processes sharing them. */
const procPss = (pid) => Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0) * 1024;
const cgroupCpuNs = async (id) => (await docker.getContainer(id).stats({ stream: false })).cpu_stats.cpu_usage.total_usage;
const standing = async () => {
  const sh = shims();
  const WINDOW = 5000;
  const c0 = await Promise.all(ids.map(cgroupCpuNs));
  const s0 = [...sh.values()].map(procCpu);
  const t0 = Date.now();
  await sleep(WINDOW);
  const c1 = await Promise.all(ids.map(cgroupCpuNs));
  const s1 = [...sh.values()].map(procCpu);
  const ms = Date.now() - t0;
  let mem = 0;
  for (const id of ids) mem += (await docker.getContainer(id).stats({ stream: false })).memory_stats.usage ?? 0;
  const cpu = (c1.reduce((a, x) => a + x, 0) - c0.reduce((a, x) => a + x, 0)) / 1e6 / ms;
  const shimCpu = ((s1.reduce((a, x) => a + x, 0) - s0.reduce((a, x) => a + x, 0)) * 10) / ms;
  const shimPss = [...sh.values()].reduce((a, p) => a + procPss(p), 0);
  return { mem, cpu, shims: sh.size, shimCpu, shimPss };
};
await sleep(1000);
const running = await standing();
for (const id of ids) await docker.getContainer(id).pause();
const paused = await standing();
for (const id of ids) await docker.getContainer(id).unpause();

// ---- report ----------------------------------------------------------------------
const f = (x) => x.toFixed(1);
const row = (name, xs) => `  ${name.padEnd(58)} ${f(q(xs, 0.5)).padStart(7)} ms  ${f(q(xs, 0.95)).padStart(7)} ms`;
const [w, e, c] = [q(s.warm, 0.5), q(s.exec, 0.5), q(s.cold, 0.5)];
const [w95, e95, c95] = [q(s.warm, 0.95), q(s.exec, 0.95), q(s.cold, 0.95)];
const ok = (good) => (good ? 'met' : 'NOT met');
const MiB = (x) => (x / 1024 / 1024).toFixed(1);
console.log(
  `Docker ${(await docker.version()).Version}, Node ${process.version}; ${RUNS} interleaved runs; ${ROUNDS} bursts of ${CONCURRENCY}`,
);
console.log(`\none-shot \`echo\`, ${RUNS} interleaved runs                          median       p95`);
console.log(row('warm pool: lessl.run() end to end', s.warm));
console.log(row('dockerode exec into an already running container', s.exec));
console.log(row('cold lessl.run() (container created and started)', s.cold));
console.log(row('dockerode unpause + exec (a paused container)', s.unpause));
console.log(
  `  warm / exec = ${(w / e).toFixed(2)}x median, ${(w95 / e95).toFixed(2)}x p95 (target <= 1.3x: ${ok(w / e <= 1.3)})`,
);
console.log(`  cold / warm = ${(c / w).toFixed(2)}x median, ${(c95 / w95).toFixed(2)}x p95 (target >= 4x: ${ok(c / w >= 4)})`);
console.log(
  `  unpause + exec / exec = ${(q(s.unpause, 0.5) / e).toFixed(2)}x median (what pausing idle containers adds to a task)`,
);
console.log(`\n${CONCURRENCY} concurrent one-shot tasks, ${ROUNDS} bursts                      p50       p99`);
console.log(`  pool of ${CONCURRENCY}`.padEnd(61) + `${f(q(b.warm, 0.5)).padStart(7)} ms  ${f(q(b.warm, 0.99)).padStart(7)} ms`);
console.log(
  `  dockerode exec into ${CONCURRENCY} running containers`.padEnd(61) +
    `${f(q(b.exec, 0.5)).padStart(7)} ms  ${f(q(b.exec, 0.99)).padStart(7)} ms`,
);
console.log('  cold'.padEnd(61) + `${f(q(b.cold, 0.5)).padStart(7)} ms  ${f(q(b.cold, 0.99)).padStart(7)} ms`);
console.log(`  pool hits ${hits + lessl.pool.stats().hits}, misses ${misses + lessl.pool.stats().misses}`);
console.log(`\nstanding cost of ${ids.length} idle warm containers (memory: docker stats; CPU over 5 s)`);
for (const [name, r] of [
  ['running', running],
  ['paused', paused],
]) {
  const shim = r.shims === 0 ? '' : `; engine shims: ${MiB(r.shimPss)} MiB (PSS), ${(r.shimCpu * 100).toFixed(2)}% of one CPU`;
  console.log(
    `  ${name.padEnd(8)} ${MiB(r.mem)} MiB in all (${(r.mem / 1024 / 1024 / Math.max(1, ids.length)).toFixed(2)} MiB each), ${(r.cpu * 100).toFixed(2)}% of one CPU${shim}`,
  );
}

await raw.remove({ force: true });
await frozen.remove({ force: true });
await lessl.close();
await purge(docker, lessl.instanceId);
