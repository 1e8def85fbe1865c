// Placement and housekeeping cost over simulated hosts: a fake engine per host (it
// answers ping and info at once; no Docker), 10, 100 and 1,000 hosts with mixed states, labels,
// capacities, loads and images. Prints the median and p99 of one placement decision and of one
// housekeeping tick, against the targets (< 1 ms and < 50 ms at 1,000 hosts).
// Run: npm run bench:hosts  (BENCH_PLACEMENTS, default 2000; BENCH_TICKS, default 50)
// Then, on the real engines of scripts/hosts.sh, the faults part at the end of this file.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { clearInterval, setInterval } from 'node:timers';
import Docker from 'dockerode';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { DEFAULT_HOUSEKEEPING_MS, DEFAULT_PING_TIMEOUT_MS, HostPool } from '../packages/docker/dist/hosts.js';
import { q as quantile } from './common.js';

const PLACEMENTS = Number(process.env.BENCH_PLACEMENTS ?? 2000);
const TICKS = Number(process.env.BENCH_TICKS ?? 50);

/** A fake engine: what HostPool calls on an engine, answering at once. */
const fakeEngine = (i) => ({
  modem: { dial: (_o, cb) => cb(null, {}) },
  ping: async () => 'OK',
  info: async () => ({ NCPU: 2 + (i % 6), MemTotal: (8 + (i % 8)) * 2 ** 30 }),
});

const poolOf = async (n) => {
  const pool = new HostPool('bench', { housekeepingMs: 60_000 });
  for (let i = 0; i < n; i++) {
    const h = pool.add(
      fakeEngine(i),
      {
        name: `h${String(i).padStart(4, '0')}`,
        labels: { zone: `z${i % 4}`, ...(i % 10 === 0 ? { gpu: 'yes' } : {}) },
        ...(i % 3 === 0 ? { capacity: { slots: 16, memoryBytes: 16 * 2 ** 30 } } : {}),
      },
      `fake://${i}`,
    );
    await pool.check(h); // spawned -> active, resources read
    for (let k = 0; k < i % 12; k++) h.track(`executor://local/x${i}-${k}`, 256 * 2 ** 20);
    if (i % 2 === 0) h.images.add('sha256:base');
    if (i % 17 === 5) pool.setState(h, 'inactive', 'bench');
  }
  return pool;
};

const ms = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;

const rows = [];
for (const n of [10, 100, 1000]) {
  const pool = await poolOf(n);
  const requests = [
    { memoryBytes: 512 * 2 ** 20, imageId: 'sha256:base' },
    { memoryBytes: 2 * 2 ** 30, constraints: { zone: 'z1' } },
    { memoryBytes: 128 * 2 ** 20, constraints: { gpu: 'yes' }, imageId: 'sha256:other' },
  ];
  // warm up the JIT, then time
  for (let i = 0; i < 200; i++) pool.place('executor://local/w', requests[i % 3]);
  const place = [];
  for (let i = 0; i < PLACEMENTS; i++) {
    const t0 = process.hrtime.bigint();
    const r = pool.place('executor://local/b', requests[i % 3]);
    place.push(ms(t0));
    if (r._tag !== 'Right') throw new Error(`no placement with ${n} hosts: ${r.left.message}`);
  }
  for (let i = 0; i < 5; i++) await pool.tick();
  const tick = [];
  for (let i = 0; i < TICKS; i++) {
    const t0 = process.hrtime.bigint();
    await pool.tick(Date.now() + 10 ** 9); // every inactive host is due for a probe too
    tick.push(ms(t0));
    for (const h of pool.all())
      if (h.state === 'active' && Number(h.name.slice(1)) % 17 === 5) pool.setState(h, 'inactive', 'bench');
  }
  await pool.close();
  rows.push({ n, place, tick });
}

const f = (x) => (x < 0.1 ? x.toFixed(4) : x.toFixed(3));
console.log(`placement and housekeeping over fake hosts (${PLACEMENTS} placements, ${TICKS} ticks per size)`);
console.log('| hosts | placement median | placement p99 | tick median | tick p99 |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of rows)
  console.log(
    `| ${r.n} | ${f(quantile(r.place, 0.5))} ms | ${f(quantile(r.place, 0.99))} ms | ${f(quantile(r.tick, 0.5))} ms | ${f(quantile(r.tick, 0.99))} ms |`,
  );
const big = rows.at(-1);
const p = quantile(big.place, 0.5);
const t = quantile(big.tick, 0.5);
console.log(`1,000 hosts: placement ${f(p)} ms (target < 1 ms: ${p < 1 ? 'met' : 'NOT met'}, ${(1 / p).toFixed(0)}x under)`);
console.log(
  `1,000 hosts: housekeeping tick ${f(t)} ms (target < 50 ms: ${t < 50 ? 'met' : 'NOT met'}, ${(50 / t).toFixed(1)}x under)`,
);

// ---- real engines under faults (scripts/hosts.sh; run under the docker lock) -------------------
// A steady 4-wide stream of one-shot runs pinned round-robin to the healthy hosts h1 and h3, first
// with every host healthy, then with h2 frozen (SIGSTOP) while a fifth worker keeps starting runs
// on h2 (they hang in their start step until h2 is noticed): p99 side by side, target <= 1.2x.
// Then the time from SIGSTOP to inactive and from SIGKILL to a daemon task ending `lost`, against
// the bound housekeepingMs + 2 x pingTimeoutMs. Skipped when /run/lessl-hosts/hosts.json is
// missing or BENCH_REAL=0. BENCH_STREAM_MS (default 15000) per phase.
const HOSTS_FILE = process.env.LESSL_HOSTS_FILE ?? '/run/lessl-hosts/hosts.json';
if (existsSync(HOSTS_FILE) && process.env.BENCH_REAL !== '0') await realEngines();

async function realEngines() {
  const STREAM_MS = Number(process.env.BENCH_STREAM_MS ?? 15_000);
  // the backend's timers do not keep a process alive: while a task's end is awaited on a killed
  // engine nothing else would, and the bench would exit before restarting it
  const keepAlive = setInterval(() => undefined, 1000);
  const file = JSON.parse(readFileSync(HOSTS_FILE, 'utf8'));
  const named = (name) => file.hosts.find((h) => h.name === name);
  const pidOf = (name) => Number(readFileSync(named(name).pidfile, 'utf8').trim());
  const plain = ['h1', 'h2', 'h3'].map(named);
  const b = await unwrap(openDockerBackend({ hosts: plain.map((h) => ({ name: h.name, url: `unix://${h.socket}` })) }));
  const bound = DEFAULT_HOUSEKEEPING_MS + 2 * DEFAULT_PING_TIMEOUT_MS;
  const stateOf = (name) => b.hosts.list().find((h) => h.name === name)?.state;
  const until = async (f, ms) => {
    const end = Date.now() + ms;
    while (Date.now() < end && !(await f())) await new Promise((r) => setTimeout(r, 50));
  };
  try {
    await until(() => plain.every((h) => stateOf(h.name) === 'active'), 30_000);
    const image = 'image://local/bench-faults';
    await unwrap(b.stores.image.create({ id: image, data: await busyboxRootfsBytes(), options: { host: 'h1' } }));
    await unwrap(b.preload([image]));
    const run = (host) => b.run({ image, spec: { cmd: ['true'] }, options: { backend: { host } } })();
    const stream = async (ms) => {
      const lat = [];
      const end = Date.now() + ms;
      let k = 0;
      await Promise.all(
        [0, 1, 2, 3].map(async () => {
          while (Date.now() < end) {
            const host = ++k % 2 === 0 ? 'h1' : 'h3';
            const t0 = process.hrtime.bigint();
            const r = await run(host);
            if (r._tag === 'Left') throw new Error(`run on ${host}: ${r.left.message}`);
            lat.push(ms0(t0));
          }
        }),
      );
      return lat;
    };
    const ms0 = (t0) => Number(process.hrtime.bigint() - t0) / 1e6;
    await stream(2000); // warm up
    const healthy = await stream(STREAM_MS);
    const h2 = pidOf('h2');
    let frozen;
    let inactiveMs = NaN;
    process.kill(h2, 'SIGSTOP');
    const t0 = Date.now();
    try {
      let stop = false;
      const onH2 = (async () => {
        while (!stop) {
          await run('h2');
          if (!Number.isNaN(inactiveMs)) await new Promise((r) => setTimeout(r, 200));
        }
      })();
      const watch = until(() => stateOf('h2') === 'inactive', 60_000).then(() => (inactiveMs = Date.now() - t0));
      frozen = await stream(STREAM_MS);
      stop = true;
      await watch;
      process.kill(h2, 'SIGCONT');
      await onH2;
    } finally {
      process.kill(h2, 'SIGCONT');
    }
    await until(() => stateOf('h2') === 'active', 30_000);
    const daemonOn = async (host) => {
      const task = `task://local/bench-d-${host}-${Date.now()}`;
      await unwrap(b.stores.task.create({ id: task, spec: { cmd: ['sleep', '3600'], daemon: true } }));
      let h = await unwrap(b.composer.handle(`executor://local/bench-x-${host}-${Date.now()}`, { backend: { host } }));
      h = await unwrap(b.composer.bind(await unwrap(b.composer.join(await unwrap(b.composer.join(h, image)), task)), task));
      await unwrap(b.composer.commit(h));
      return task;
    };
    const lostAfter = async (task, t1) => {
      await unwrap(b.tasks.wait(task));
      return Date.now() - t1;
    };
    // SIGSTOP -> lost (a daemon on h2)
    const d2 = await daemonOn('h2');
    process.kill(h2, 'SIGSTOP');
    let stopLost;
    try {
      stopLost = await lostAfter(d2, Date.now());
    } finally {
      process.kill(h2, 'SIGCONT');
    }
    await until(() => stateOf('h2') === 'active', 30_000);
    // SIGKILL -> lost (a daemon on h3), then restart h3
    const d3 = await daemonOn('h3');
    process.kill(pidOf('h3'), 'SIGKILL');
    let killLost;
    try {
      killLost = await lostAfter(d3, Date.now());
    } finally {
      execFileSync('bash', [new URL('../scripts/hosts.sh', import.meta.url).pathname, 'up'], { stdio: 'pipe' });
    }
    await until(() => stateOf('h3') === 'active', 30_000);
    const p99h = quantile(healthy, 0.99);
    const p99f = quantile(frozen, 0.99);
    console.log('');
    console.log(`real engines h1-h3, one-shot runs on h1 and h3, 4 wide, ${STREAM_MS} ms per phase`);
    console.log('| phase | runs | median | p99 |');
    console.log('| --- | --- | --- | --- |');
    console.log(`| all hosts healthy | ${healthy.length} | ${f(quantile(healthy, 0.5))} ms | ${f(p99h)} ms |`);
    console.log(
      `| h2 frozen (SIGSTOP), runs also started on h2 | ${frozen.length} | ${f(quantile(frozen, 0.5))} ms | ${f(p99f)} ms |`,
    );
    const ratio = p99f / p99h;
    console.log(`p99 frozen / healthy: ${ratio.toFixed(2)}x (target <= 1.2x: ${ratio <= 1.2 ? 'met' : 'NOT met'})`);
    console.log(`SIGSTOP -> inactive: ${inactiveMs} ms (bound ${bound} ms: ${inactiveMs <= bound ? 'met' : 'NOT met'})`);
    console.log(`SIGSTOP -> daemon task lost: ${stopLost} ms (bound ${bound} ms: ${stopLost <= bound ? 'met' : 'NOT met'})`);
    console.log(`SIGKILL -> daemon task lost: ${killLost} ms (bound ${bound} ms: ${killLost <= bound ? 'met' : 'NOT met'})`);
  } finally {
    const instance = b.instanceId;
    await b.close();
    for (const h of plain) await purge(new Docker({ socketPath: h.socket }), instance).catch(() => 0);
    clearInterval(keepAlive);
  }
}
