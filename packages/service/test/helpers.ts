/**
 * Test helpers: a real server on loopback over the memory backend (commands run by its tiny
 * shell), users with tokens, and fetch with a token.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { unwrap, utf8 } from '@lessl/core';
import { Registry } from '@lessl/level';
import { openMemoryBackend, tinyShell, type FakeProcess } from '@lessl/memory';
import { createServer, ownerAuthorizer, serviceFunctionAuthorizer, type LesslServer, type ServerOptions } from '@lessl/service';

export const ADMIN_TOKEN = 'lsl_test-admin-token-0123456789';

/** The seed-001 example spec, with an image that exists here (the memory backend's tiny shell runs its commands). */
export const SEED_SPEC = {
  version: 1.0,
  daemon: false,
  image: 'busybox',
  ttl: 3600,
  resources: [{ content_type: 'text/x-sh', data: "echo 'Hello World'", dest: '/opt/hello.sh' }],
  task_name: 'hello_world',
  pwd: '/opt',
  env: { KEY: 'value' },
  cmd: ['echo hello $KEY', 'echo second'],
};

/** The memory backend's tiny shell, taking `/bin/sh -c` as `sh -c`. */
export const shell: FakeProcess = (spec, io) =>
  tinyShell({ ...spec, cmd: spec.cmd[0] === '/bin/sh' ? ['sh', ...spec.cmd.slice(1)] : spec.cmd }, io);

export interface Harness {
  readonly server: LesslServer;
  /** The registry under the backend, for looking underneath (the helper's own, or the one given with `backend`). */
  readonly registry: Registry;
  readonly url: string;
  /** fetch against the server with a token (default: ann's). */
  call(path: string, init?: RequestInit & { token?: string | null; json?: unknown }): Promise<Response>;
  readonly tokens: Record<string, string>;
  close(): Promise<void>;
}

/** Starts a server over a memory backend with an image `busybox` (public) and users ann and bob. */
export const start = async (
  options: Partial<ServerOptions> & { run?: FakeProcess; baseImageData?: Uint8Array; registry?: Registry } = {},
): Promise<Harness> => {
  const { baseImageData, registry: given, ...opts } = options;
  const own = opts.backend === undefined ? await Registry.open({ memory: true }) : undefined;
  const backend =
    opts.backend ??
    (await unwrap(
      openMemoryBackend({
        authorize: ownerAuthorizer,
        authorizeFunction: serviceFunctionAuthorizer,
        run: opts.run ?? shell,
        registry: own,
      }),
    ));
  await unwrap(backend.stores.image.create({ id: 'image://local/busybox', data: baseImageData ?? new Uint8Array([1, 2, 3]) }));
  const server = await createServer({ adminToken: ADMIN_TOKEN, reapIntervalMs: 3_600_000, ...opts, backend });
  const url = await server.listen();
  const tokens: Record<string, string> = { admin: ADMIN_TOKEN };
  const call: Harness['call'] = (path, init = {}) => {
    const { token, json, ...rest } = init;
    const headers = new Headers(rest.headers);
    const tk = token === undefined ? tokens.ann : token;
    if (tk !== null && tk !== undefined) headers.set('authorization', `Bearer ${tk}`);
    if (json !== undefined) headers.set('content-type', 'application/json');
    return fetch(`${url}${path}`, {
      ...rest,
      headers,
      redirect: 'manual',
      ...(json === undefined ? {} : { body: JSON.stringify(json) }),
    });
  };
  for (const name of ['ann', 'bob']) {
    const r = await call('/v1/users', { method: 'POST', token: ADMIN_TOKEN, json: { name } });
    tokens[name] = ((await r.json()) as { token: string }).token;
  }
  const registry = (): Registry => {
    const r = given ?? own;
    if (r === undefined) throw new Error('pass the registry with the backend to look underneath');
    return r;
  };
  return {
    server,
    url,
    call,
    tokens,
    get registry() {
      return registry();
    },
    close: () => server.close().then(() => backend.close()),
  };
};

/** Polls a job until it is final (via ?wait on GET is not offered: poll the job). */
export const settle = async (h: Harness, job: string, token?: string): Promise<Record<string, unknown>> => {
  for (;;) {
    const r = await h.call(`/v1/jobs/${job}`, token === undefined ? {} : { token });
    const j = (await r.json()) as Record<string, unknown>;
    if (r.status === 303 || ['done', 'failed', 'cancelled'].includes(String(j.state)))
      return { ...j, status: r.status, location: r.headers.get('location') };
    await new Promise((res) => setTimeout(res, 20));
  }
};

export const owned = (owner: string) => utf8({ owner });

/** A self-signed certificate for 127.0.0.1 and its key, made by openssl: PEM files `<name>.crt` and `<name>.key` in `dir`. */
export const selfSigned = (dir: string, name = 'tls'): { cert: string; key: string } => {
  const [cert, key] = [join(dir, `${name}.crt`), join(dir, `${name}.key`)];
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' }); // prettier-ignore
  return { cert, key };
};
