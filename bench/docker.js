// npm run bench:docker: lessl against plain dockerode on the same engine, in one run, interleaved.
//  1. 20 concurrent one-second tasks from one image, each in its own container (wall time);
//  2. one-shot task latency: lessl.run() vs create/attach/start/wait/remove (median, p95);
//  3. a task exec'd into a running container: commit + tasks.wait vs exec create/start/inspect.
// Prints each side and the lessl/dockerode ratios. Not a test: no timed assertions anywhere.
import Docker from 'dockerode';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { demux, hostConfig } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 20);
const docker = new Docker();
const lessl = await unwrap(openDockerBackend());
const IMAGE = 'image://local/bench';
const base = await unwrap(lessl.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));
const imageId = String(base.attributes.imageId);
const cmd = ['sh', '-c', 'echo out; echo err >&2'];

// ---- the two sides -------------------------------------------------------------
const dockerodeOneShot = async (command = cmd, expect = 'out\n') => {
  const c = await docker.createContainer({
    Image: imageId,
    Cmd: command,
    Entrypoint: [],
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    HostConfig: hostConfig,
  });
  const s = await c.attach({ stream: true, stdout: true, stderr: true });
  const drained = demux(s);
  await c.start();
  const out = await drained;
  const { StatusCode } = await c.wait();
  await c.remove({ force: true });
  if (StatusCode !== 0 || Buffer.concat(out.stdout).toString() !== expect) throw new Error('dockerode one-shot failed');
};
const lesslOneShot = async (command = cmd, expect = 'out\n') => {
  const r = await unwrap(lessl.run({ image: IMAGE, spec: { cmd: command } }));
  if (r.exitCode !== 0 || text(r.stdout) !== expect) throw new Error(`lessl one-shot failed: ${JSON.stringify(r)}`);
};

// a running container for exec, each side its own
const daemonTask = 'task://local/daemon';
const X = 'executor://local/exec-bench';
await unwrap(lessl.stores.task.create({ id: daemonTask, spec: { cmd: ['sleep', '3600'], daemon: true } }));
let xh = await unwrap(lessl.composer.handle(X));
xh = await unwrap(lessl.composer.join(xh, IMAGE));
xh = await unwrap(lessl.composer.bind(await unwrap(lessl.composer.join(xh, daemonTask)), daemonTask));
if (!(await unwrap(lessl.composer.commit(xh))).committed) throw new Error('daemon did not start');
const raw = await docker.createContainer({ Image: imageId, Cmd: ['sleep', '3600'], Entrypoint: [], HostConfig: hostConfig });
await raw.start();
const execTasks = [];
for (let i = 0; i < RUNS + 1; i++) {
  const id = `task://local/x${i}`;
  await unwrap(lessl.stores.task.create({ id, spec: { cmd } }));
  execTasks.push(id);
}
let k = 0;

const dockerodeExec = async () => {
  const ex = await raw.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false });
  const s = await ex.start({ hijack: true, stdin: false });
  const out = await demux(s);
  const info = await ex.inspect();
  if (info.ExitCode !== 0 || Buffer.concat(out.stdout).toString() !== 'out\n') throw new Error('dockerode exec failed');
};
const lesslExec = async () => {
  const task = execTasks[k++];
  const c = lessl.composer;
  const h = await unwrap(c.handle(X));
  const r = await unwrap(c.commit(await unwrap(c.bind(await unwrap(c.join(h, task)), task))));
  const t = await unwrap(lessl.tasks.wait(task));
  if (!r.committed || t.exitCode !== 0 || text(t.stdout) !== 'out\n') throw new Error('lessl exec failed');
  return task;
};
const leave = async (task) => {
  const c = lessl.composer;
  await unwrap(c.commit(await unwrap(c.leave(await unwrap(c.handle(X)), task))));
};

// ---- measure ----------------------------------------------------------------------
const time = async (fn) => {
  const t0 = process.hrtime.bigint();
  const r = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e6, r];
};
const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)];
  return { median: q(0.5), p95: q(0.95) };
};
const series = { lesslConc: [], rawConc: [], lesslOne: [], rawOne: [], lesslExec: [], rawExec: [] };

// 1. concurrency: N one-second tasks at once, each side in turn, ROUNDS rounds
const sleepCmd = ['sh', '-c', 'sleep 1; echo done'];
const burst = (fn) => () => Promise.all(Array.from({ length: CONCURRENCY }, () => fn(sleepCmd, 'done\n')));
await burst(dockerodeOneShot)();
await burst(lesslOneShot)();
for (let i = 0; i < ROUNDS; i++) {
  if (i % 2 === 0) {
    series.rawConc.push((await time(burst(dockerodeOneShot)))[0]);
    series.lesslConc.push((await time(burst(lesslOneShot)))[0]);
  } else {
    series.lesslConc.push((await time(burst(lesslOneShot)))[0]);
    series.rawConc.push((await time(burst(dockerodeOneShot)))[0]);
  }
}

// 2. one-shot latency, interleaved
await dockerodeOneShot();
await lesslOneShot();
for (let i = 0; i < RUNS; i++) {
  const pair = [
    async () => series.rawOne.push((await time(() => dockerodeOneShot()))[0]),
    async () => series.lesslOne.push((await time(() => lesslOneShot()))[0]),
  ];
  if (i % 2 === 1) pair.reverse();
  for (const p of pair) await p();
}

// 3. exec, interleaved (the lessl side's leave is committed outside the timing)
await dockerodeExec();
await leave(await lesslExec());
for (let i = 0; i < RUNS; i++) {
  const pair = [
    async () => series.rawExec.push((await time(dockerodeExec))[0]),
    async () => {
      const [ms, task] = await time(lesslExec);
      series.lesslExec.push(ms);
      await leave(task);
    },
  ];
  if (i % 2 === 1) pair.reverse();
  for (const p of pair) await p();
}

const row = (name, l, r, target) => {
  const a = stats(l);
  const b = stats(r);
  console.log(
    `${name.padEnd(44)} lessl median ${a.median.toFixed(1).padStart(7)} ms  p95 ${a.p95.toFixed(1).padStart(7)} ms | dockerode median ${b.median.toFixed(1).padStart(7)} ms  p95 ${b.p95.toFixed(1).padStart(7)} ms | ratio median ${(a.median / b.median).toFixed(2)}x  p95 ${(a.p95 / b.p95).toFixed(2)}x  (target <= ${target}x median)`,
  );
};
console.log(
  `Docker ${(await docker.version()).Version}; ${RUNS} interleaved runs per latency row, ${ROUNDS} rounds of ${CONCURRENCY} concurrent tasks\n`,
);
row(`${CONCURRENCY} concurrent 1 s tasks, wall time`, series.lesslConc, series.rawConc, '1.10');
row('one-shot task latency, run()', series.lesslOne, series.rawOne, '1.05');
row("task exec'd into a running container", series.lesslExec, series.rawExec, '1.05');

// ---- clean up ---------------------------------------------------------------------
await raw.remove({ force: true });
await lessl.close();
await purge(docker, lessl.instanceId);
