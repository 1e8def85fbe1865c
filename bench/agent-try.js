// node bench/agent-try.js: a warm container whose main process is lessl-agent (built with
// `gcc -static -O2 -s -o /tmp/lessl-agent packages/docker/agent/lessl-agent.c`), driven over its
// attach stream, next to dockerode's exec into the same container. Not a test: no assertions.
import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import Docker from 'dockerode';
import { pack } from 'tar-stream';
import { busyboxRootfs } from '@lessl/docker';
import { hostConfig } from './common.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 500);
const docker = new Docker();
const tag = 'lessl-agent-try:1';
await new Promise((res, rej) =>
  docker.importImage(busyboxRootfs(), { repo: 'lessl-agent-try', tag: '1' }, (e, s) => (e ? rej(e) : s.on('end', res).resume())),
);
const c = await docker.createContainer({
  Image: tag,
  Cmd: ['/lessl-agent'],
  OpenStdin: true,
  StdinOnce: false,
  AttachStdin: true,
  AttachStdout: true,
  AttachStderr: true,
  Tty: false,
  HostConfig: hostConfig,
});
const tarball = pack();
tarball.entry({ name: 'lessl-agent', mode: 0o755 }, readFileSync('/tmp/lessl-agent'));
tarball.finalize();
await c.putArchive(tarball, { path: '/' });
const sock = await c.attach({ stream: true, stdin: true, stdout: true, stderr: true, hijack: true });
const out = new PassThrough();
docker.modem.demuxStream(sock, out, process.stderr);
await c.start();

let buf = Buffer.alloc(0);
let wake;
out.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  wake?.();
});
const frame = (t, run, data = Buffer.alloc(0)) => {
  const h = Buffer.alloc(9);
  h.write(t, 0, 'latin1');
  h.writeUInt32BE(run, 1);
  h.writeUInt32BE(data.length, 5);
  return Buffer.concat([h, data]);
};
const runF = (run, argv) =>
  frame('R', run, Buffer.from(['', '', '', String(argv.length), ...argv, '1', 'PATH=/bin'].map((s) => `${s}\0`).join('')));
const waitExit = async () => {
  for (;;) {
    let off = 0;
    while (buf.length - off >= 9) {
      const len = buf.readUInt32BE(off + 5);
      if (buf.length - off < 9 + len) break;
      const t = buf.toString('latin1', off, off + 1);
      off += 9 + len;
      if (t === 'X') {
        buf = buf.subarray(off);
        return;
      }
    }
    await new Promise((r) => (wake = r));
  }
};
const now = () => Number(process.hrtime.bigint()) / 1e6;
const agent = [];
const exec = [];
for (let i = 1; i <= RUNS; i++) {
  let t0 = now();
  sock.write(runF(i, ['echo', 'hi']));
  await waitExit();
  agent.push(now() - t0);
  if (i % 5 === 0) {
    t0 = now();
    const x = await c.exec({ Cmd: ['echo', 'hi'], AttachStdout: true, AttachStderr: true });
    const s = await x.start({ hijack: true, stdin: false });
    await new Promise((r) => s.on('end', r).resume());
    await x.inspect();
    exec.push(now() - t0);
  }
}
const q = (a, x) => [...a].sort((m, n) => m - n)[Math.min(a.length - 1, Math.floor(a.length * x))].toFixed(1);
console.log(`echo hi through the agent (${agent.length} calls): p50 ${q(agent, 0.5)} ms, p99 ${q(agent, 0.99)} ms`);
console.log(`echo hi through docker exec (${exec.length} calls): p50 ${q(exec, 0.5)} ms, p99 ${q(exec, 0.99)} ms`);
sock.end();
await c.remove({ force: true });
await docker.getImage(tag).remove();
