// npm run bench:soak: does the task service stay flat? `lessl serve --memory --data <tmp>` in its
// own process (memory backend, records and registry on disk, default durability `disk`), 16
// clients on 127.0.0.1 each looping: POST /v1/tasks?wait (a one-shot `echo`), then DELETE it.
// Prints the service's RSS and the size of its data directory at 10k, 50k and 100k tasks, and
// the RSS ratio 100k/10k (target within ±10 %). RSS moves with the garbage collector's timing
// (±20 % from one sample to the next), so it is sampled every 250 ms and each checkpoint reports
// the median (and max) of the samples taken over the last 5 % of the tasks before it. Retention windows are short here (SOAK_RETAIN
// seconds, default 10) so the run reaches its steady state; the reaper runs every second.
// SOAK_TASKS scales the run (default 100,000; checkpoints at 10 %, 50 % and 100 % of it).
// Stops by itself. Not a test: no timed assertions.
/* global fetch, setInterval, clearInterval */
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServe } from './common.js';

const TOTAL = Number(process.env.SOAK_TASKS ?? 100_000);
const CLIENTS = Number(process.env.SOAK_CLIENTS ?? 16);
const RETAIN = Number(process.env.SOAK_RETAIN ?? 10);
const CHECKPOINTS = [0.1, 0.5, 1].map((f) => Math.round(TOTAL * f));
const TOKEN = 'lsl_soak-admin-token-0123456789';
const data = mkdtempSync(join(tmpdir(), 'lessl-soak-'));

/** Starts `lessl serve --memory --data` in its own process on 127.0.0.1; answers its URL, pid and a stop function. */
const startService = () => {
  const retain = ['--retain-tasks', '--retain-jobs', '--retain-events'].flatMap((f) => [f, String(RETAIN)]);
  const args = ['--memory', '--data', data, '--host', '127.0.0.1', '--port', '0', '--concurrency', String(CLIENTS)];
  return startServe([...args, '--reap-interval', '1', ...retain], TOKEN);
};

/** Resident set size of a process, in MiB (from /proc). */
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

/** Bytes under a directory. */
const du = (dir) =>
  readdirSync(dir, { withFileTypes: true }).reduce((n, e) => {
    const p = join(dir, e.name);
    try {
      return n + (e.isDirectory() ? du(p) : statSync(p).size);
    } catch {
      return n; // a LevelDB file compacted away meanwhile
    }
  }, 0);

const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
/** One task end to end: submit, wait for its end, delete it. */
const oneTask = async (url) => {
  const r = await fetch(`${url}/v1/tasks?wait=60`, {
    method: 'POST',
    headers,
    body: JSON.stringify({ image: 'busybox', cmd: ['echo soak'] }),
  });
  const t = await r.json();
  if (r.status !== 201) throw new Error(`POST answered ${r.status}: ${JSON.stringify(t)}`);
  const d = await fetch(`${url}/v1/tasks/${t.id}`, { method: 'DELETE', headers: { authorization: headers.authorization } });
  if (d.status !== 204) throw new Error(`DELETE answered ${d.status}`);
};

const svc = await startService();
console.log(
  `soak: ${TOTAL} one-shot tasks, ${CLIENTS} clients, lessl serve --memory --data (pid ${svc.pid}), retention ${RETAIN} s`,
);
const rows = [];
try {
  let started = 0;
  let done = 0;
  const t0 = Date.now();
  const next = CHECKPOINTS.slice();
  const window = Math.max(1, Math.round(TOTAL * 0.05));
  let samples = [];
  const sampler = setInterval(() => {
    if (next.length > 0 && done >= next[0] - window) samples.push(rssMiB(svc.pid));
  }, 250);
  const median = (a) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] ?? rssMiB(svc.pid);
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (started < TOTAL) {
        started++;
        await oneTask(svc.url);
        done++;
        if (done === next[0]) {
          next.shift();
          const row = { tasks: done, rss: median(samples), max: Math.max(...samples, 0), disk: du(data) / 2 ** 20 };
          samples = [];
          rows.push(row);
          const rate = (done / (Date.now() - t0)) * 1000;
          console.log(
            `${String(row.tasks).padStart(7)} tasks   RSS median ${row.rss.toFixed(1).padStart(6)} MiB (max ${row.max.toFixed(1)})   data ${row.disk.toFixed(1).padStart(6)} MiB   ${rate.toFixed(0)} tasks/s`,
          );
        }
      }
    }),
  );
  clearInterval(sampler);
  const [first, , last] = rows;
  if (first !== undefined && last !== undefined)
    console.log(
      `RSS ${last.tasks} / ${first.tasks} tasks: ${(last.rss / first.rss).toFixed(2)}x (target 0.90x-1.10x); data ${first.disk.toFixed(1)} -> ${last.disk.toFixed(1)} MiB`,
    );
} finally {
  await svc.stop();
  rmSync(data, { recursive: true, force: true });
}
