// npm run bench:docker: a one-shot task in a new container, and a task exec'd into a running
// container, through lessl and through dockerode directly, interleaved in one run.
// Prints median and p95 per path and the lessl/dockerode ratios. Not a test.
import Docker from 'dockerode';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, DEFAULTS } from '@lessl/docker';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const docker = new Docker();
const lessl = await unwrap(openDockerBackend());
const base = await unwrap(lessl.stores.image.create({ id: 'image://local/bench', data: await busyboxRootfsBytes() }));
const imageId = String(base.attributes.imageId);
const cmd = ['sh', '-c', 'echo out; echo err >&2'];

const hostConfig = {
  NetworkMode: 'none',
  Privileged: false,
  CapDrop: ['ALL'],
  CapAdd: [],
  SecurityOpt: ['no-new-privileges'],
  Init: true,
  PidsLimit: DEFAULTS.pids,
  Memory: DEFAULTS.memoryBytes,
  MemorySwap: DEFAULTS.memoryBytes,
  ReadonlyRootfs: false,
  Mounts: [],
};
const demux = (stream) =>
  new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const out = { stdout: [], stderr: [] };
    stream.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 8) {
        const n = buf.readUInt32BE(4);
        if (buf.length < 8 + n) break;
        (buf[0] === 2 ? out.stderr : out.stdout).push(buf.subarray(8, 8 + n));
        buf = buf.subarray(8 + n);
      }
    });
    stream.on('end', () => resolve(out));
    stream.on('close', () => resolve(out));
  });

// ---- the two sides -------------------------------------------------------------
const dockerodeOneShot = async () => {
  const c = await docker.createContainer({
    Image: imageId,
    Cmd: cmd,
    Entrypoint: [],
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    HostConfig: hostConfig,
  });
  const s = await c.attach({ stream: true, stdout: true, stderr: true });
  const drained = demux(s);
  await c.start();
  const w = c.wait();
  const out = await drained;
  const { StatusCode } = await w;
  await c.remove({ force: true });
  if (StatusCode !== 0 || Buffer.concat(out.stdout).toString() !== 'out\n') throw new Error('dockerode one-shot failed');
};
let k = 0;
const tasks = [];
for (let i = 0; i < RUNS * 2 + 2; i++) {
  const id = `task://local/b${i}`;
  await unwrap(lessl.stores.task.create({ id, spec: { cmd } }));
  tasks.push(id);
}
const lesslOneShot = async () => {
  const task = tasks[k++];
  const c = lessl.composer;
  let h = await unwrap(c.handle());
  h = await unwrap(c.join(h, 'image://local/bench'));
  h = await unwrap(c.bind(await unwrap(c.join(h, task)), task));
  const r = await unwrap(c.commit(h));
  const t = r.results.find((s) => s.op === 'bind')?.task;
  if (!r.committed || t?.exitCode !== 0 || Buffer.from(t.stdout).toString() !== 'out\n') throw new Error('lessl one-shot failed');
  return h.executor; // cleaned up outside the timing
};

// a running container for exec, each side its own
const daemonTask = 'task://local/daemon';
await unwrap(lessl.stores.task.create({ id: daemonTask, spec: { cmd: ['sleep', '3600'], daemon: true } }));
let xh = await unwrap(lessl.composer.handle('executor://local/exec-bench'));
xh = await unwrap(lessl.composer.join(xh, 'image://local/bench'));
xh = await unwrap(lessl.composer.bind(await unwrap(lessl.composer.join(xh, daemonTask)), daemonTask));
let xr = await unwrap(lessl.composer.commit(xh));
if (!xr.committed) throw new Error('daemon did not start');
let xhandle = xr.handle;
const raw = await docker.createContainer({ Image: imageId, Cmd: ['sleep', '3600'], Entrypoint: [], HostConfig: hostConfig });
await raw.start();

const dockerodeExec = async () => {
  const ex = await raw.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false });
  const s = await ex.start({ hijack: true, stdin: false });
  const out = await demux(s);
  const info = await ex.inspect();
  if (info.ExitCode !== 0 || Buffer.concat(out.stdout).toString() !== 'out\n') throw new Error('dockerode exec failed');
};
const lesslExec = async () => {
  const task = tasks[k++];
  const c = lessl.composer;
  const r = await unwrap(c.commit(await unwrap(c.bind(await unwrap(c.join(xhandle, task)), task))));
  const t = r.results.find((s) => s.id === task && s.op === 'bind')?.task;
  if (!r.committed || t?.exitCode !== 0) throw new Error('lessl exec failed');
  xhandle = await unwrap(c.leave(r.handle, task)); // keep the composition small; this leave is committed with the next run
};

// ---- measure, interleaved ---------------------------------------------------------
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
const series = { lesslOne: [], rawOne: [], lesslExec: [], rawExec: [] };
const executors = [];
await dockerodeOneShot();
executors.push(await lesslOneShot()); // warm-up, not counted
for (let i = 0; i < RUNS; i++) {
  const order = i % 2 === 0;
  if (order) {
    series.rawOne.push((await time(dockerodeOneShot))[0]);
    const [ms, x] = await time(lesslOneShot);
    series.lesslOne.push(ms);
    executors.push(x);
  } else {
    const [ms, x] = await time(lesslOneShot);
    series.lesslOne.push(ms);
    executors.push(x);
    series.rawOne.push((await time(dockerodeOneShot))[0]);
  }
}
await dockerodeExec();
await lesslExec();
for (let i = 0; i < RUNS; i++) {
  if (i % 2 === 0) {
    series.rawExec.push((await time(dockerodeExec))[0]);
    series.lesslExec.push((await time(lesslExec))[0]);
  } else {
    series.lesslExec.push((await time(lesslExec))[0]);
    series.rawExec.push((await time(dockerodeExec))[0]);
  }
}

const row = (name, l, r) => {
  const a = stats(l),
    b = stats(r);
  console.log(
    `${name.padEnd(30)} lessl median ${a.median.toFixed(1).padStart(7)} ms  p95 ${a.p95.toFixed(1).padStart(7)} ms | dockerode median ${b.median.toFixed(1).padStart(7)} ms  p95 ${b.p95.toFixed(1).padStart(7)} ms | ratio median ${(a.median / b.median).toFixed(2)}x  p95 ${(a.p95 / b.p95).toFixed(2)}x`,
  );
};
console.log(`runs: ${RUNS} each, interleaved; Docker ${(await docker.version()).Version}; target lessl <= 1.10x dockerode\n`);
row('one-shot task, new container', series.lesslOne, series.rawOne);
row("task exec'd, running container", series.lesslExec, series.rawExec);

// ---- clean up ---------------------------------------------------------------------
await raw.remove({ force: true });
await lessl.close();
await purge(docker, lessl.registry.instanceId);
