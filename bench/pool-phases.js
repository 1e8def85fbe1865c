// node bench/pool-phases.js: where a warm one-shot run() spends its time, phase by phase, next to
// dockerode's exec into a running container (docs/pool.md). Every Docker call, registry write and
// lessl call of a run is stamped; the medians over BENCH_RUNS (default 30) interleaved runs of
// each stamp are printed, with the gap to the one before. Background work that is not part of a
// run (the used container's removal, the refill) is left out: the runs wait for it in between.
// Not a test: no timed assertions anywhere.
import Docker from 'dockerode';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { demux, hostConfig, q } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 30);
const docker = new Docker();
// the bench opens the registry itself, to stamp every write to it
const reg = await Registry.open({ memory: true });
const lessl = await unwrap(openDockerBackend({ docker, registry: reg }));
const IMAGE = 'image://local/bench-phases';
const base = await unwrap(lessl.stores.image.create({ id: IMAGE, data: await busyboxRootfsBytes() }));
const cmd = ['echo', 'out'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let log = null;
let t0 = 0;
const now = () => Number(process.hrtime.bigint()) / 1e6;
const mark = (s) => log?.push([now() - t0, s]);
// every Docker call
const modem = docker.modem;
const dial = modem.dial.bind(modem);
modem.dial = (o, cb) => {
  const call = `${o.method} ${(o.path ?? '').replace(/[0-9a-f]{64}/g, '{id}').replace(/\?.*/, '')}`;
  mark(`docker ${call}`);
  return dial(o, (e, d) => {
    mark(`docker ${call} answered`);
    cb(e, d);
  });
};
// every registry write
const commit = reg.commit.bind(reg);
reg.commit = (c) => {
  const what = Object.entries(c)
    .filter(([, v]) => v?.length)
    .map(([k, v]) => `${k} ${v.length}`)
    .join(', ');
  mark(`registry write (${what})`);
  const p = commit(c);
  p.then(
    () => mark(`registry write (${what}) durable`),
    () => undefined,
  );
  return p;
};
// the lessl calls run() makes
const wrap = (o, name, label) => {
  const f = o[name].bind(o);
  o[name] = (...a) => {
    const te = f(...a);
    return async () => {
      mark(label);
      const r = await te();
      mark(`${label} done`);
      return r;
    };
  };
};
wrap(lessl.stores.task, 'create', 'task create');
wrap(lessl.stores.task, 'delete', 'task delete');
wrap(lessl.stores.executor, 'delete', 'executor delete');
for (const v of ['handle', 'join', 'bind', 'leave', 'commit']) wrap(lessl.composer, v, v);
for (const v of ['wait', 'kill']) wrap(lessl.tasks, v, `tasks.${v}`);

const raw = await docker.createContainer({
  Image: String(base.attributes.imageId),
  Cmd: ['sh', '-c', 'while :; do sleep 3600; done'],
  Entrypoint: [],
  HostConfig: hostConfig,
});
await raw.start();
const exec = async () => {
  const ex = await raw.exec({ Cmd: cmd, AttachStdout: true, AttachStderr: true, Tty: false });
  const out = await demux(await ex.start({ hijack: true, stdin: false }));
  mark('output drained');
  if ((await ex.inspect()).ExitCode !== 0 || Buffer.concat(out.stdout).toString() !== 'out\n') throw new Error('exec failed');
};
const run = async () => {
  const r = await unwrap(lessl.run({ image: IMAGE, spec: { cmd } }));
  if (text(r.stdout) !== 'out\n') throw new Error('run failed');
};
const pooled = () =>
  docker.listContainers({ all: true, filters: { label: [`lessl.registry=${lessl.instanceId}`, 'lessl.pool'] } });
const settled = async () => {
  for (let i = 0; i < 800 && !((lessl.pool.stats().profiles[0]?.ready ?? 0) >= 2 && (await pooled()).length === 2); i++)
    await sleep(25);
  await sleep(100);
};
/** Times `fn` with stamps; the stamps of background work that began before or ends after are dropped. */
const stamped = async (fn) => {
  log = [];
  t0 = now();
  await fn();
  mark('resolved');
  const l = log;
  log = null;
  return l.filter(([, s]) => !/DELETE \/containers|containers\/create|\/containers\/\{id\}\/start/.test(s));
};

await unwrap(lessl.pool.configure([{ image: IMAGE, min: 2, max: 2 }], { memoryCapBytes: 16 * 1024 ** 3 }));
await exec();
await settled();
await run();
const timelines = { 'warm run()': [], 'dockerode exec': [] };
for (let i = 0; i < RUNS; i++) {
  const sides = [
    async () => {
      await settled();
      timelines['warm run()'].push(await stamped(run));
      await settled();
    },
    async () => timelines['dockerode exec'].push(await stamped(exec)),
  ];
  if (i % 2 === 1) sides.reverse();
  for (const f of sides) await f();
}

for (const [name, runs] of Object.entries(timelines)) {
  // the n-th occurrence of each stamp, in the order of the first run
  const keyed = runs.map((l) => {
    const seen = new Map();
    return new Map(
      l.map(([ms, s]) => {
        const n = (seen.get(s) ?? 0) + 1;
        seen.set(s, n);
        return [`${s}#${n}`, ms];
      }),
    );
  });
  console.log(`\n${name}: median time of each stamp over ${runs.length} runs, and the gap to the one before`);
  let prev = 0;
  for (const key of keyed[0].keys()) {
    const xs = keyed.map((k) => k.get(key)).filter((x) => x !== undefined);
    const m = q(xs, 0.5);
    console.log(`${m.toFixed(1).padStart(8)} ms  +${(m - prev).toFixed(1).padStart(5)}  ${key.replace(/#1$/, '')}`);
    prev = m;
  }
}
await raw.remove({ force: true });
await lessl.close();
await purge(docker, lessl.instanceId);
