/**
 * Test harness: a real service on loopback (memory backend: commands run in its tiny shell, an
 * image `busybox`), and the real `lessl` binary run as a child process against it.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { unwrap } from '@lessl/core';
import { openMemoryBackend } from '@lessl/memory';
import { createServer, ownerAuthorizer, serviceFunctionAuthorizer, type LesslServer, type ServerOptions } from '@lessl/service';
import { memoryShell } from '../src/serve.js';

/** The built executable. */
export const BIN = fileURLToPath(new URL('../dist/bin.js', import.meta.url));
export const ADMIN_TOKEN = 'lsl_cli-test-admin-token-0123456789';

/** The seed-001 example spec as the design note gives it: on busybox it prints `Hello World` and `value in /opt`, then exits 7. */
export const SEED_EXAMPLE = {
  version: 1.0,
  daemon: false,
  image: 'busybox',
  ttl: 3600,
  resources: [{ content_type: 'text/x-sh', data: "echo 'Hello World'\n", dest: '/opt/hello.sh' }],
  task_name: 'hello_world',
  pwd: '/opt',
  env: { KEY: 'value' },
  cmd: ['sh hello.sh', 'echo "$KEY in $(pwd)"', 'exit 7', 'echo never'],
};

/** What one run of the CLI did. */
export interface Ran {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Stdout as bytes. */
  readonly bytes: Buffer;
}

/** Runs `lessl ARGS` with LESSL_URL/LESSL_TOKEN set (never inheriting the caller's); `input` goes to its stdin. */
export const lessl = (
  args: readonly string[],
  o: { url?: string; token?: string; input?: string | Uint8Array; cwd?: string } = {},
): Promise<Ran> =>
  new Promise((resolve, reject) => {
    const env: NodeJS.ProcessEnv = { ...process.env, LESSL_URL: o.url ?? '', LESSL_TOKEN: o.token ?? '' };
    const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'], cwd: o.cwd });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      const bytes = Buffer.concat(out);
      resolve({ code, stdout: bytes.toString('utf8'), stderr, bytes });
    });
    child.stdin.end(o.input ?? '');
  });

/** A running service and a way to call the CLI against it as one of its users. */
export interface Harness {
  readonly server: LesslServer;
  readonly url: string;
  readonly tokens: Record<string, string>;
  /** `lessl ARGS` as `user` (default ann). */
  run(args: readonly string[], o?: { user?: string; token?: string; input?: string | Uint8Array; cwd?: string }): Promise<Ran>;
  close(): Promise<void>;
}

/** Starts a service over the memory backend with an image `busybox` and users ann and bob (made with `lessl users add`). */
export const start = async (opts: Partial<ServerOptions> = {}): Promise<Harness> => {
  const backend =
    opts.backend ??
    (await unwrap(
      openMemoryBackend({ authorize: ownerAuthorizer, authorizeFunction: serviceFunctionAuthorizer, run: memoryShell }),
    ));
  await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: new Uint8Array([1, 2, 3]) }));
  const server = await createServer({ adminToken: ADMIN_TOKEN, reapIntervalMs: 3_600_000, ...opts, backend });
  const url = await server.listen({ host: '127.0.0.1', port: 0 });
  const tokens: Record<string, string> = { admin: ADMIN_TOKEN };
  const run: Harness['run'] = (args, o = {}) =>
    lessl(args, {
      url,
      token: o.token ?? tokens[o.user ?? 'ann'] ?? '',
      ...(o.input === undefined ? {} : { input: o.input }),
      ...(o.cwd === undefined ? {} : { cwd: o.cwd }),
    });
  for (const name of ['ann', 'bob']) {
    const r = await run(['users', 'add', name], { user: 'admin' });
    if (r.code !== 0) throw new Error(`users add ${name}: ${r.stderr}`);
    tokens[name] = r.stdout.trim();
  }
  return { server, url, tokens, run, close: () => server.close().then(() => backend.close()) };
};
