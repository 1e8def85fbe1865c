// `flock /tmp/lessl-docker.lock node bench/ports.js` (after `npm run build`): a task's port reached
// both ways. A busybox `httpd` daemon (declaring port 8080, network none) in a container made for
// it; BENCH_RUNS (default 300) interleaved requests of each way, each on a new connection:
//   here      tasks.connect from this machine (a host forwarder in the container's network
//             namespace hands over a socket: root, engine here; the default) + one GET;
//   engine    the same with `directPorts: false`: through the run's forwarder exec (cold), or the
//             pool container's agent (warm);
//   ahead     a GET over a connection opened ahead (the next one opened as it is taken: what the
//             service's proxy does with its spare connections), each way;
//   direct    the same busybox httpd run on the host, on loopback, + one GET (a new TCP connection).
// Also the first connect of each way (it starts the forwarder). Prints p50 and p99 of each and the
// ratios to direct. Not a test: no assertions. Nothing is pulled.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { unwrap } from '@lessl/core';
import { BUSYBOX, busyboxRootfs, openDockerBackend, purge } from '@lessl/docker';
import { q, time } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 300);
const PAGE = 'hello from httpd\n';
const SERVE = `echo '${PAGE.trim()}' > /tmp/index.html && exec httpd -f -p 8080 -h /tmp`;
const IMAGE = 'image://local/bench-ports';

/** One GET of /index.html over a connection `make` opens (or a new TCP connection to `port`). */
const get = (conn) =>
  new Promise((resolve, reject) => {
    const opts = typeof conn === 'number' ? { port: conn, host: '127.0.0.1', agent: false } : { createConnection: () => conn };
    const req = request({ ...opts, path: '/index.html' }, (res) => {
      let s = '';
      res.on('data', (c) => (s += c));
      res.on('end', () => (s === PAGE ? resolve() : reject(new Error(`unexpected body: ${s}`))));
    });
    req.on('error', reject);
    req.end();
  });

/** Starts `spec` as the task of a new executor; answers the task ID once its port answers. */
const start = async (l, name, spec) => {
  const task = `task://local/${name}`;
  await unwrap(l.stores.task.create({ id: task, spec }));
  let h = await unwrap(l.composer.join(await unwrap(l.composer.handle(`executor://local/${name}`)), IMAGE));
  h = await unwrap(l.composer.bind(await unwrap(l.composer.join(h, task)), task));
  await unwrap(l.composer.commit(h));
  return task;
};

/** Waits until the task's port answers; the first answer's time is reported. */
const firstAnswer = async (l, task) => {
  for (let i = 0; i < 200; i++) {
    let answered = false;
    const ms = await time(async () => {
      const c = await l.tasks.connect(task, 8080)();
      if (c._tag === 'Right') await get(c.right);
      answered = c._tag === 'Right';
    });
    if (answered) return ms;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${task} never listened`);
};

const viaTask = (l, task) => async () => get(await unwrap(l.tasks.connect(task, 8080)));

/** GETs over a connection opened ahead, the next one opened as each is taken (as the proxy's spares). */
const aheadOf = (l, task) => {
  let next = unwrap(l.tasks.connect(task, 8080));
  return async () => {
    const c = await next;
    next = unwrap(l.tasks.connect(task, 8080));
    await get(c);
  };
};

const docker = new Docker();
const here = await unwrap(openDockerBackend());
const engine = await unwrap(openDockerBackend({ directPorts: false, reaper: false }));
const www = mkdtempSync(join(tmpdir(), 'lessl-bench-ports-'));
writeFileSync(join(www, 'index.html'), PAGE);
const direct = spawn(BUSYBOX, ['httpd', '-f', '-p', '127.0.0.1:18089', '-h', www], { stdio: 'ignore' });
const ROWS = {
  hereCold: 'here: tasks.connect from this machine + GET',
  hereAhead: 'here: GET over a connection opened ahead',
  engineCold: 'engine: tasks.connect via the forwarder exec + GET',
  engineWarm: 'engine: warm pool task, via the pool agent + GET',
  engineAhead: 'engine: GET over a connection opened ahead',
  direct: 'direct: the same busybox httpd on the host loopback + GET',
};
const t = Object.fromEntries(Object.keys(ROWS).map((k) => [k, []]));
const first = {};
const tasks = [];
try {
  for (const l of [here, engine]) await unwrap(l.stores.image.create({ id: IMAGE, data: busyboxRootfs() }));
  const hereCold = await start(here, 'bench-here', { cmd: ['sh', '-c', SERVE], daemon: true, ports: [8080] });
  first.here = await firstAnswer(here, hereCold);
  const engineCold = await start(engine, 'bench-engine', { cmd: ['sh', '-c', SERVE], daemon: true, ports: [8080] });
  first.engine = await firstAnswer(engine, engineCold);
  await unwrap(engine.pool.configure([{ image: IMAGE, min: 1 }]));
  while (!engine.pool.stats().profiles.some((p) => p.ready >= 1)) await new Promise((r) => setTimeout(r, 100));
  const engineWarm = await start(engine, 'bench-warm', { cmd: ['sh', '-c', SERVE], ports: [8080] });
  await firstAnswer(engine, engineWarm);
  tasks.push([here, hereCold], [engine, engineCold], [engine, engineWarm]);
  for (let i = 0; i < 30; i++) await get(18089); // the host httpd is up, and warm
  const ways = {
    hereCold: viaTask(here, hereCold),
    hereAhead: aheadOf(here, hereCold),
    engineCold: viaTask(engine, engineCold),
    engineWarm: viaTask(engine, engineWarm),
    engineAhead: aheadOf(engine, engineCold),
    direct: () => get(18089),
  };
  for (let i = 0; i < 20; i++) for (const f of Object.values(ways)) await f(); // warm-up
  for (let i = 0; i < RUNS; i++) for (const [k, f] of Object.entries(ways)) t[k].push(await time(f));
} finally {
  for (const [l, task] of tasks) await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
  direct.kill('SIGKILL');
  for (const l of [here, engine]) {
    await l.close();
    await purge(docker, l.instanceId);
  }
  rmSync(www, { recursive: true, force: true });
}

const f = (x) => x.toFixed(2).padStart(8);
const row = (name, xs) => console.log(`${name.padEnd(64)}${f(q(xs, 0.5))}${f(q(xs, 0.99))}`);
console.log(`connect + GET /index.html, ${RUNS} interleaved requests each (ms)        p50     p99`);
console.log(`${'here: the first connect of a run (starts the host forwarder) + GET'.padEnd(64)}${f(first.here)}`);
console.log(`${'engine: the first connect of a run (starts the forwarder exec) + GET'.padEnd(64)}${f(first.engine)}`);
for (const [k, name] of Object.entries(ROWS)) row(name, t[k]);
const ratio = (a, p) => (q(t[a], p) / q(t.direct, p)).toFixed(2);
for (const k of Object.keys(ROWS).filter((k) => k !== 'direct'))
  console.log(`${k} / direct: p50 ${ratio(k, 0.5)}x, p99 ${ratio(k, 0.99)}x`);
