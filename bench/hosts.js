// Placement and housekeeping cost over simulated hosts: a fake engine per host (it
// answers ping and info at once; no Docker), 10, 100 and 1,000 hosts with mixed states, labels,
// capacities, loads and images. Prints the median and p99 of one placement decision and of one
// housekeeping tick, against the targets (< 1 ms and < 50 ms at 1,000 hosts).
// Run: npm run bench:hosts  (BENCH_PLACEMENTS, default 2000; BENCH_TICKS, default 50)
import { HostPool } from '../packages/docker/dist/hosts.js';
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
