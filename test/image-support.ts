/**
 * What test/image.test.ts and test/stack.test.ts share: the docker CLI (as the docs use it),
 * the image built once by scripts/image.sh, bounded waits that say what they waited for, and a
 * free loopback port.
 */
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { root } from './snippets.js';

const run = promisify(execFile);

/** What one command did. */
export interface Done {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cmd args` (env over this process's); never rejects: the exit status is in the answer. */
export const sh = (cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, timeout = 120_000): Promise<Done> =>
  run(cmd, [...args], { env: { ...process.env, ...env }, timeout, maxBuffer: 16 << 20 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code?: number | string; stdout?: string; stderr?: string; message?: string }) => ({
      code: typeof e.code === 'number' ? e.code : -1,
      stdout: e.stdout ?? '',
      stderr: e.stderr ?? e.message ?? '',
    }),
  );

/** `docker args` on the engine of `host` (a DOCKER_HOST; default: the root engine); its stdout trimmed, or a thrown error with its stderr. */
export const docker = async (args: readonly string[], host?: string): Promise<string> => {
  const r = await sh('docker', args, host === undefined ? {} : { DOCKER_HOST: host });
  if (r.code !== 0) throw new Error(`docker ${args.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout.trim();
};

/** Builds the image with scripts/image.sh (a tag of its own, so a run does not retag another's) and answers the tag. */
export const buildImage = async (tag = 'lessl/lessl:test'): Promise<string> => {
  const r = await sh('bash', [join(root, 'scripts', 'image.sh'), tag], {}, 300_000);
  if (r.code !== 0) throw new Error(`scripts/image.sh: exit ${r.code}: ${r.stderr}`);
  return r.stdout.trim();
};

/** Polls `probe` every 250 ms until it answers a value (not undefined); past `ms`, throws naming `what` and the last state seen. */
export const until = async <A>(
  what: string,
  ms: number,
  probe: () => Promise<A | undefined>,
  seen?: () => Promise<string>,
): Promise<A> => {
  const end = Date.now() + ms;
  for (;;) {
    const a = await probe().catch(() => undefined);
    if (a !== undefined) return a;
    if (Date.now() > end)
      throw new Error(`${what}: not within ${ms / 1000} s${seen === undefined ? '' : `; last seen: ${await seen()}`}`);
    await new Promise((r) => setTimeout(r, 250));
  }
};

/** A TCP port free on loopback now. */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (typeof a === 'object' && a !== null ? resolve(a.port) : reject(new Error('no port'))));
    });
  });
