// What the benchmarks share: lessl's default container settings (so plain dockerode is compared
// like with like), a demultiplexer of Docker's attach/exec streams, timing and quantiles.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '@lessl/docker';

/** The built `lessl` command. */
export const LESSL_BIN = fileURLToPath(new URL('../packages/cli/dist/bin.js', import.meta.url));

/**
 * A policy file whose quotas no benchmark's load reaches (they are still checked on every
 * request: docs/service.md, "Quotas and rate limits"), for `lessl serve --policy`.
 */
export const roomyPolicyFile = () => {
  const file = join(mkdtempSync(join(tmpdir(), 'lessl-bench-policy-')), 'policy.json');
  const quotas = { runningTasks: 1e9, queuedJobs: 1e9, requestsPerSecond: 1e6, burst: 1e6 };
  writeFileSync(file, JSON.stringify({ quotas }));
  return file;
};

/**
 * Starts `lessl --json serve ...args` in its own process with `LESSL_ADMIN_TOKEN` = `token` (and,
 * unless `args` name a policy or config, `roomyPolicyFile()`); answers its URL, registry instance,
 * pid and a stop function (SIGTERM, then waits for the exit).
 */
export const startServe = async (args, token) => {
  const policy = args.includes('--policy') || args.includes('--config') ? [] : ['--policy', roomyPolicyFile()];
  const child = spawn(process.execPath, [LESSL_BIN, '--json', 'serve', ...args, ...policy], {
    env: { ...process.env, LESSL_ADMIN_TOKEN: token },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const exited = new Promise((resolve) => child.on('close', resolve));
  const line = await Promise.race([
    new Promise((resolve) => createInterface({ input: child.stdout }).once('line', resolve)),
    exited.then((code) => Promise.reject(new Error(`lessl serve exited ${code}`))),
  ]);
  const { url, registry } = JSON.parse(line);
  return { url, registry, pid: child.pid, stop: async () => (child.kill('SIGTERM'), await exited) };
};

/** The container settings lessl uses by default (hardening, limits, no network). */
export const hostConfig = {
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

/** Reads a multiplexed Docker stream to its end: `{ stdout: Buffer[], stderr: Buffer[] }`. */
export const demux = (stream) =>
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

/** Milliseconds `fn` takes. */
export const time = async (fn) => {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e6;
};

/** The `p` quantile of `xs` (nearest rank). */
export const q = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
};

/**
 * lessl-agent run on the host over pipes (frames in, frames out, no Docker), with `bin` as its
 * PATH: `once()` runs `echo hi` through it to its exit (the floor of a warm run: a fork, an exec
 * and a wait); `close()` ends it.
 */
export const localAgent = (bin) => {
  const agent = fileURLToPath(new URL('../packages/docker/agent/lessl-agent', import.meta.url));
  const p = spawn(agent, [], { stdio: ['pipe', 'pipe', 'inherit'], env: { PATH: bin } });
  let buf = Buffer.alloc(0);
  let wake;
  p.stdout.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    wake?.();
  });
  let run = 0;
  const once = async () => {
    run++;
    const payload = Buffer.from(['', '', '', '2', 'echo', 'hi', '0'].map((s) => `${s}\0`).join(''));
    const h = Buffer.alloc(9);
    h.write('R', 0, 'latin1');
    h.writeUInt32BE(run, 1);
    h.writeUInt32BE(payload.length, 5);
    p.stdin.write(Buffer.concat([h, payload]));
    for (;;) {
      for (let off = 0; buf.length - off >= 9;) {
        const len = buf.readUInt32BE(off + 5);
        if (buf.length - off < 9 + len) break;
        const type = buf.toString('latin1', off, off + 1);
        off += 9 + len;
        if (type === 'X') return void (buf = buf.subarray(off));
      }
      await new Promise((r) => (wake = r));
    }
  };
  return { once, close: () => p.kill() };
};
