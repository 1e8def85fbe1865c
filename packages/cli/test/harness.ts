/**
 * Test harness: a real service on loopback (memory backend: commands run in its tiny shell, an
 * image `busybox`), and the real `lessl` binary run as a child process against it.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { unwrap } from '@lessl/core';
import { openMemoryBackend, tinyShell, type FakeProcess } from '@lessl/memory';
import { createServer, ownerAuthorizer, type LesslServer, type ServerOptions } from '@lessl/service';

/** The built executable. */
export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
export const ADMIN_TOKEN = 'lsl_cli-test-admin-token-0123456789';

/** The memory backend's tiny shell, taking `/bin/sh -c` as `sh -c`. */
export const shell: FakeProcess = (spec, io) =>
  tinyShell({ ...spec, cmd: spec.cmd[0] === '/bin/sh' ? ['sh', ...spec.cmd.slice(1)] : spec.cmd }, io);

/** What one run of the CLI did. */
export interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `lessl ARGS` with LESSL_URL/LESSL_TOKEN set (never inheriting the caller's); `input` goes to its stdin. */
export const lessl = (args: readonly string[], o: { url?: string; token?: string; input?: string } = {}): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LESSL_URL: o.url ?? '', LESSL_TOKEN: o.token ?? '' };
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(o.input ?? '');
  });

/** A running service and a way to call the CLI against it as one of its users. */
export interface Harness {
  readonly server: LesslServer;
  readonly url: string;
  readonly tokens: Record<string, string>;
  /** `lessl ARGS` as `user` (default ann). */
  run(args: readonly string[], o?: { user?: string; token?: string; input?: string }): Promise<Ran>;
  close(): Promise<void>;
}

/** Starts a service over the memory backend with an image `busybox` and users ann and bob (made with `lessl users add`). */
export const start = async (opts: Partial<ServerOptions> = {}): Promise<Harness> => {
  const backend = opts.backend ?? (await unwrap(openMemoryBackend({ authorize: ownerAuthorizer, run: shell })));
  await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: new Uint8Array([1, 2, 3]) }));
  const server = await createServer({ adminToken: ADMIN_TOKEN, reapIntervalMs: 3_600_000, ...opts, backend });
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  const tokens: Record<string, string> = { admin: ADMIN_TOKEN };
  const run: Harness['run'] = (args, o = {}) =>
    lessl(args, { url, token: o.token ?? tokens[o.user ?? 'ann'] ?? '', ...(o.input === undefined ? {} : { input: o.input }) });
  for (const name of ['ann', 'bob']) {
    const r = await run(['users', 'add', name], { user: 'admin' });
    if (r.code !== 0) throw new Error(`users add ${name}: ${r.stderr}`);
    tokens[name] = r.stdout.trim();
  }
  return { server, url, tokens, run, close: () => server.close().then(() => backend.close()) };
};
