// `flock /tmp/lessl-docker.lock node bench/agent.js` (after `npm run build`): `echo hi` in a warm
// container, BENCH_RUNS (default 500) interleaved calls of each way:
//   agent   through AgentContainer.run: one frame on the container's attach stream (no engine call);
//   exec    dockerode's exec into the same kind of running container (create, start, inspect);
//   floor   the same fork, exec and wait of the same static busybox `echo` on the host: the agent
//           binary run locally over pipes (what the agent in the container does, without Docker),
//           and Node's child_process.spawn.
// Prints p50 and p99 of each, the agent's targets (p50 <= 5 ms, p99 <= 20 ms) and the ratios.
// Not a test: no assertions. Nothing is pulled: the image is built from /bin/busybox.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { BUSYBOX, busyboxRootfs, startAgentContainer } from '@lessl/docker';
import { demux, hostConfig, localAgent, q, time } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 500);
const docker = new Docker();
const tag = `lessl-bench-agent:${process.pid}`;
const labels = { 'lessl.bench': 'agent' };
// the host runs the same static busybox `echo` as the container (not a dynamically linked one)
const bin = mkdtempSync(join(tmpdir(), 'lessl-bench-agent-'));
symlinkSync(BUSYBOX, join(bin, 'echo'));

const importImage = async () => {
  const s = await docker.importImage(busyboxRootfs(), { repo: 'lessl-bench-agent', tag: String(process.pid) });
  await new Promise((res, rej) => docker.modem.followProgress(s, (e) => (e ? rej(e) : res())));
};

const started = async () => {
  const a = await startAgentContainer(docker, { image: tag, hostConfig, labels, env: ['PATH=/bin'] });
  if (a._tag === 'Left') throw new Error(a.left.message);
  return a.right;
};

/** One run through an agent container, to its exit. */
const viaAgent = async (agent) => {
  let out = '';
  const r = agent.run({ argv: ['echo', 'hi'], output: (_s, d) => (out += Buffer.from(d).toString()) });
  if (r._tag === 'Left') throw new Error(r.left.message);
  const end = await r.right.done;
  if (end.exitCode !== 0 || out !== 'hi\n') throw new Error(`agent run: ${JSON.stringify(end)} ${out}`);
};

/** One docker exec into a running container, to its exit code. */
const viaExec = async (id) => {
  const c = docker.getContainer(id);
  const x = await c.exec({ Cmd: ['echo', 'hi'], AttachStdout: true, AttachStderr: true });
  const out = await demux(await x.start({ hijack: true, stdin: false }));
  if ((await x.inspect()).ExitCode !== 0 || Buffer.concat(out.stdout).toString() !== 'hi\n') throw new Error('exec failed');
};

const viaSpawn = () =>
  new Promise((resolve, reject) => {
    const c = spawn(join(bin, 'echo'), ['hi'], { stdio: ['ignore', 'pipe', 'ignore'] });
    c.stdout.resume();
    c.on('error', reject);
    c.on('close', resolve);
  });

await importImage();
const agent = await started();
const execInto = await started(); // the same kind of container, for docker exec
const local = localAgent(bin);
const t = { agent: [], exec: [], local: [], spawn: [] };
try {
  for (let i = 0; i < 20; i++) await Promise.all([viaAgent(agent), viaExec(execInto.id), local.once(), viaSpawn()]); // warm-up
  for (let i = 0; i < RUNS; i++) {
    t.agent.push(await time(() => viaAgent(agent)));
    t.exec.push(await time(() => viaExec(execInto.id)));
    t.local.push(await time(() => local.once()));
    t.spawn.push(await time(viaSpawn));
  }
} finally {
  local.close();
  await agent.remove();
  await execInto.remove();
  await docker.getImage(tag).remove({ force: true });
  rmSync(bin, { recursive: true, force: true });
}

const f = (x) => x.toFixed(2).padStart(8);
const row = (name, xs, target = '') => console.log(`${name.padEnd(58)}${f(q(xs, 0.5))}${f(q(xs, 0.99))}   ${target}`);
console.log(`echo hi, ${RUNS} interleaved calls each (ms)                        p50     p99`);
const met = q(t.agent, 0.5) <= 5 && q(t.agent, 0.99) <= 20 ? 'met' : 'NOT met';
row('agent in a running container (AgentContainer.run)', t.agent, `target p50 <= 5, p99 <= 20: ${met}`);
row('docker exec into the same kind of container (dockerode)', t.exec);
row('floor: the agent on the host over pipes (fork, exec, wait)', t.local);
row('floor: child_process.spawn on the host', t.spawn);
const ratio = (a, b, p) => (q(a, p) / q(b, p)).toFixed(2);
console.log(`docker exec / agent: p50 ${ratio(t.exec, t.agent, 0.5)}x, p99 ${ratio(t.exec, t.agent, 0.99)}x`);
console.log(`agent / floor (agent on the host): p50 ${ratio(t.agent, t.local, 0.5)}x, p99 ${ratio(t.agent, t.local, 0.99)}x`);
console.log(`agent / floor (spawn): p50 ${ratio(t.agent, t.spawn, 0.5)}x, p99 ${ratio(t.agent, t.spawn, 0.99)}x`);
