// npm run bench: registry and event benchmarks, side by side with raw classic-level.
// Prints ops/s and ratios. Not a test: figures vary with the machine.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { elementToJson, parseId, unwrap, utf8 } from '@lessl/core';
import { Registry } from '@lessl/level';
import { openMemoryBackend } from '@lessl/memory';

const N = Number(process.env.BENCH_N ?? 20000);
const CONC = 32;
const spec = { cmd: ['sleep', '1'] };
const ro = utf8({ owner: 'bench', team: 'core' });
const rw = utf8({ note: 'x'.repeat(64) });

const time = async (fn) => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
};
const rate = (n, s) => n / s;
const fmt = (x) => Math.round(x).toLocaleString('en-US').padStart(12);
const rows = [];
const row = (name, lessl, raw) => {
  rows.push({ name, lessl, raw });
  console.log(
    `${name.padEnd(34)} lessl ${fmt(lessl)} /s   raw ${raw === undefined ? ''.padStart(12) : fmt(raw)} /s   ${raw === undefined ? '' : `ratio ${(lessl / raw).toFixed(2)}x`}`,
  );
};
const inBatches = async (n, conc, fn) => {
  let i = 0;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (i < n) await fn(i++);
    }),
  );
};

const dirs = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'lessl-bench-'));
  dirs.push(d);
  return d;
};

// ---- durability: 'process' vs 'disk' (fsync per group-committed batch) ---------------
// Creates through the store API on an on-disk registry, one at a time and 32 in flight: with
// 'disk' each batch is fsynced before its calls resolve; group commit shares one fsync among
// the changes queued meanwhile, so the cost falls as concurrency rises.
async function durability() {
  const D = Number(process.env.BENCH_DURABILITY_N ?? Math.min(N, 5000));
  const measure = async (durability, conc) => {
    const b = await unwrap(openMemoryBackend({ registry: { location: tmp() }, durability }));
    const s = await time(() =>
      inBatches(D, conc, (i) => unwrap(b.stores.task.create({ id: `task://local/d${i}`, spec, ro, rw }))),
    );
    await b.close();
    return rate(D, s);
  };
  console.log(`\ndurability (creates on disk, N=${D}, median of 3 interleaved rounds)`);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];
  for (const conc of [1, CONC]) {
    // three interleaved rounds, the median of each side (the machine's load moves meanwhile)
    const runs = { process: [], disk: [] };
    for (let r = 0; r < 3; r++) for (const d of ['process', 'disk']) runs[d].push(await measure(d, conc));
    const [proc, disk] = [median(runs.process), median(runs.disk)];
    console.log(
      `${`create, ${conc} in flight`.padEnd(34)} process ${fmt(proc)} /s   disk ${fmt(disk)} /s   ratio disk/process ${(disk / proc).toFixed(2)}x`,
    );
  }
  console.log('');
}
if (process.env.BENCH_ONLY === 'durability') {
  await durability();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  process.exit(0);
}

// ---- the registry layer alone: one record + its event per atomic batch ------------
{
  const reg = await Registry.open({ location: tmp() });
  const rdb = new ClassicLevel(tmp(), { valueEncoding: 'utf8' });
  await rdb.open();
  const base = (await unwrap(openMemoryBackend())).stores;
  const el = await unwrap(base.task.create({ id: 'task://local/r', spec, ro, rw }));
  const rec = JSON.stringify(elementToJson(el));
  const mk = (i) => ({ ...el, id: { ...el.id, name: `r${i}`, key: `task://local/r${i}` } });
  const ev = (i) => [{ type: 'created', id: `task://local/r${i}`, revision: 1, detail: {} }];
  const a = await time(async () => {
    for (let i = 0; i < N; i++) await reg.commit({ put: [mk(i)], events: ev(i) });
  });
  const b = await time(async () => {
    for (let i = 0; i < N; i++) await rdb.put(`e!task://local/r${i}`, rec);
  });
  row('registry commit record+event', rate(N, a), rate(N, b));
  const c = await time(async () => {
    for (let i = 0; i < N; i++) await reg.commit({ put: [{ ...mk(i), revision: 2 }], events: ev(i) });
  });
  const d = await time(async () => {
    for (let i = 0; i < N; i++) await rdb.put(`e!task://local/r${i}`, rec);
  });
  row('registry update record+event', rate(N, c), rate(N, d));
  const g = await time(async () => {
    for (let i = 0; i < N; i++) reg.get(`task://local/r${i}`);
  });
  const h = await time(async () => {
    for (let i = 0; i < N; i++) JSON.parse(await rdb.get(`e!task://local/r${i}`));
  });
  row('registry get', rate(N, g), rate(N, h));
  const sc = await time(async () => {
    for (let i = 0; i < 200; i++) reg.scan(`task://local/r${i % 10}`, 100);
  });
  const rs2 = await time(async () => {
    for (let i = 0; i < 200; i++) {
      const out = [];
      for await (const [, v] of rdb.iterator({ gte: `e!task://local/r${i % 10}`, lt: `e!task://local/r${i % 10}~`, limit: 100 }))
        out.push(JSON.parse(v));
    }
  });
  row('registry list 100 (prefix)', rate(200, sc), rate(200, rs2));
  await reg.close();
  await rdb.close();
  console.log('');
}

// ---- the full store API (validation, locks, policy, events) on a classic-level registry ----
const registry = await Registry.open({ location: tmp() });
const lessl = await unwrap(openMemoryBackend({ registry }));
const tasks = lessl.stores.task;
const id = (i) => `task://local/t${i}`;

// record size for the raw side: the same JSON the registry writes
const sample = await unwrap(tasks.create({ id: 'task://local/sample', spec, ro, rw }));
const record = JSON.stringify(elementToJson(sample));
const raw = new ClassicLevel(tmp(), { valueEncoding: 'utf8' });
await raw.open();
console.log(`record size ${record.length} bytes, N=${N}, concurrency ${CONC} where noted\n`);

const seqCreate = await time(async () => {
  for (let i = 0; i < N; i++) await unwrap(tasks.create({ id: id(i), spec, ro, rw }));
});
const rawPut = await time(async () => {
  for (let i = 0; i < N; i++) await raw.put(`e!${id(i)}`, record);
});
row('create (sequential)', rate(N, seqCreate), rate(N, rawPut));

const cCreate = await time(() => inBatches(N, CONC, (i) => unwrap(tasks.create({ id: id(N + i), spec, ro, rw }))));
const cPut = await time(() => inBatches(N, CONC, (i) => raw.put(`e!${id(N + i)}`, record)));
row(`create (${CONC} in flight)`, rate(N, cCreate), rate(N, cPut));

const seqRead = await time(async () => {
  for (let i = 0; i < N; i++) await unwrap(tasks.read(id(i)));
});
const rawGet = await time(async () => {
  for (let i = 0; i < N; i++) JSON.parse(await raw.get(`e!${id(i)}`));
});
row('read (sequential)', rate(N, seqRead), rate(N, rawGet));

const seqUpdate = await time(async () => {
  for (let i = 0; i < N; i++) await unwrap(tasks.update(id(i), { note: utf8({ v: String(i) }).v }));
});
const rawUpd = await time(async () => {
  for (let i = 0; i < N; i++) await raw.put(`e!${id(i)}`, record);
});
row('update (sequential)', rate(N, seqUpdate), rate(N, rawUpd));

const L = 200;
const listS = await time(async () => {
  for (let i = 0; i < L; i++) await unwrap(tasks.list({ namePrefix: `t${i % 10}`, limit: 100 }));
});
const rawList = await time(async () => {
  for (let i = 0; i < L; i++) {
    const out = [];
    for await (const [, v] of raw.iterator({ gte: `e!task://local/t${i % 10}`, lt: `e!task://local/t${i % 10}~`, limit: 100 }))
      out.push(JSON.parse(v));
  }
});
row('list 100 of 40k (prefix)', rate(L, listS), rate(L, rawList));
await lessl.close();
await raw.close();

// ---- event fan-out (publish -> subscribers), in process --------------------------
const hubReg = await Registry.open({ memory: true });
const E = 1_000_000;
for (const subs of [1, 16]) {
  let got = 0;
  const offs = Array.from({ length: subs }, () =>
    hubReg.events.subscribe({}, () => {
      got++;
    }),
  );
  const ev = { seq: 0, time: '', type: 'modified', id: parseId('task://local/x').right, revision: 1, detail: {} };
  const batch = Array.from({ length: 1000 }, (_, i) => ({ ...ev, seq: i + 1 }));
  const s = await time(async () => {
    for (let i = 0; i < E / 1000; i++) hubReg.events.publish(batch);
  });
  offs.forEach((f) => f());
  if (got !== E * subs) throw new Error('fan-out lost events');
  row(`fan-out, ${subs} subscriber${subs > 1 ? 's' : ''} (events/s)`, rate(E, s));
  console.log(`${''.padEnd(34)} deliveries ${fmt(rate(E * subs, s))} /s   target >= 200,000 events/s`);
}
await hubReg.close();

await durability();

// ---- durable events end to end (create -> log -> subscriber), for context ------
// ---- replay of 100,000 events from the log ------------------------------------
const R = 100_000;
const rreg = await Registry.open({ location: tmp() });
for (let i = 0; i < R; i += 1000)
  await rreg.commit({
    events: Array.from({ length: 1000 }, (_, j) => ({ type: 'modified', id: `task://local/t${i + j}`, revision: 1, detail: {} })),
  });
let count = 0;
const rs = await time(async () => {
  for await (const e of rreg.events.stream({}, { since: 0, highWaterMark: 8192 })) {
    count++;
    if (e.seq === R) break;
  }
});
if (count !== R) throw new Error(`replay delivered ${count}`);
const rawReplay = await time(async () => {
  let n = 0;
  for await (const [, v] of rreg['db'].iterator({ gte: 'l!', lt: 'l"' })) {
    JSON.parse(v);
    n++;
  }
  if (n !== R) throw new Error('raw replay');
});
console.log(
  `${'replay 100,000 events'.padEnd(34)} lessl ${rs.toFixed(3).padStart(9)} s      raw iterator ${rawReplay.toFixed(3)} s   ratio ${(rawReplay / rs).toFixed(2)}x   target < 1 s`,
);
await rreg.close();
for (const d of dirs) rmSync(d, { recursive: true, force: true });
