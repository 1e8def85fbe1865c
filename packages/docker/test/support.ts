/**
 * What the Docker tests share: unique names, a proxy in front of the real engine that can fail
 * on demand (the engine stays real; only the wire between lessl and it is cut or held), and
 * the set-up of a running daemon executor.
 */
import { rmSync } from 'node:fs';
import { request, type Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { pack } from 'tar-stream';
import type Docker from 'dockerode';
import { runtimeError, unwrap } from '@lessl/core';
import type { FactoryOptions } from '@lessl/conformance';
import type { StringLevel } from '@lessl/level';
import { openDockerBackend, purge, type DockerBackend, type DockerBackendOptions } from '@lessl/docker';

/** `stem-xxxxxx`, unique enough for one test run. */
export const n = (stem: string): string => `${stem}-${Math.random().toString(36).slice(2, 8)}`;

/** How the proxy treats traffic now. */
export type ProxyMode =
  /** everything passes */
  | 'pass'
  /** connections are accepted and nothing is answered (a dockerd stopped with SIGSTOP); held data flows on `pass` */
  | 'frozen'
  /** requests whose request line matches `refuse` drop their connection (the engine died mid-call) */
  | 'refusing';

/** A unix-socket proxy in front of /var/run/docker.sock. */
export interface EngineProxy {
  readonly path: string;
  mode: ProxyMode;
  /** The request lines refused in `refusing` mode, e.g. /^DELETE \/[^ ]*containers\//. */
  refuse: RegExp;
  /** How many requests were refused so far. */
  readonly refused: number;
  /** Cuts the open connections and goes on accepting new ones (the same socket file). */
  cut(): void;
  /** Stops accepting connections (existing ones are cut) or starts again on the same path. */
  down(): Promise<void>;
  up(): Promise<void>;
  close(): Promise<void>;
}

/** Starts a proxy to the engine (see `ProxyMode`). */
export const engineProxy = async (target = '/var/run/docker.sock'): Promise<EngineProxy> => {
  const path = join(tmpdir(), `${n('engine')}.sock`);
  const conns = new Set<Socket>();
  const held: (() => void)[] = [];
  let refused = 0;
  const connect = (c: Socket): void => {
    const up = createConnection(target);
    conns.add(c).add(up);
    const close = (): void => {
      c.destroy();
      up.destroy();
    };
    c.on('data', (d: Buffer) => {
      if (p.mode === 'refusing' && p.refuse.test(d.subarray(0, 300).toString('latin1'))) {
        refused++;
        close();
      } else if (p.mode === 'frozen') held.push(() => up.write(d));
      else up.write(d);
    });
    up.on('data', (d: Buffer) => (p.mode === 'frozen' ? held.push(() => c.write(d)) : c.write(d)));
    c.on('error', close).on('close', close);
    up.on('error', close).on('close', close);
  };
  let server: Server | undefined;
  const listen = (): Promise<void> =>
    new Promise((res) => {
      const s = createServer(connect);
      server = s;
      s.listen(path, () => res());
    });
  const cut = (): void => {
    for (const c of conns) c.destroy();
    conns.clear();
  };
  const down = async (): Promise<void> => {
    const closed = new Promise<void>((res) => (server === undefined ? res() : server.close(() => res())));
    // the engine goes away: its open (keep-alive) connections too
    cut();
    await closed;
    rmSync(path, { force: true });
  };
  let mode: ProxyMode = 'pass';
  const p: EngineProxy = {
    path,
    get mode() {
      return mode;
    },
    set mode(m: ProxyMode) {
      mode = m;
      if (m !== 'frozen') for (const f of held.splice(0)) f();
    },
    refuse: /^$/,
    get refused() {
      return refused;
    },
    cut,
    down,
    up: listen,
    close: down,
  };
  await listen();
  return p;
};

/** Polls `f` until it is true (every 100 ms, up to `ms`); answers whether it became true. */
export const eventually = async (f: () => boolean | Promise<boolean>, ms = 15_000): Promise<boolean> => {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return f();
};

/** A running daemon executor over `image`; answers its executor ID and container. */
export const startDaemon = async (
  b: DockerBackend,
  image: string,
  spec: Record<string, unknown> = { cmd: ['sleep', '3600'], daemon: true },
): Promise<{ x: string; task: string; containerId: string }> => {
  const task = `task://local/${n('d')}`;
  await unwrap(b.stores.task.create({ id: task, spec }));
  let h = await unwrap(b.composer.handle(`executor://local/${n('x')}`));
  h = await unwrap(b.composer.bind(await unwrap(b.composer.join(await unwrap(b.composer.join(h, image)), task)), task));
  const r = await unwrap(b.composer.commit(h));
  if (!r.committed) throw new Error(`the daemon did not start: ${r.error.message}`);
  return { x: h.executor.key, task, containerId: String(r.executor.attributes.containerId) };
};

/** A tar archive of `files` (name -> content), as bytes. */
export const tarOf = async (files: Record<string, string>): Promise<Uint8Array> => {
  const p = pack();
  for (const [name, body] of Object.entries(files)) p.entry({ name }, body);
  p.finalize();
  const parts: Buffer[] = [];
  for await (const c of p as AsyncIterable<Buffer>) parts.push(c);
  return new Uint8Array(Buffer.concat(parts));
};

/**
 * The conformance suite's factory for a Docker backend opened with `base` options: a throw-away
 * (in-memory) registry's objects are purged from `engines` on close (persistent ones by the reopen).
 */
export const conformanceFactory =
  (base: DockerBackendOptions, engines: (b: DockerBackend) => readonly Docker[]) =>
  async (o: FactoryOptions): Promise<DockerBackend> => {
    const fail = o.failStep;
    const b = await unwrap(
      openDockerBackend({
        ...base,
        stores: o.stores,
        registry: o.location === undefined ? { memory: true } : { location: o.location },
        ...(o.authorize === undefined ? {} : { authorize: o.authorize }),
        ...(o.credentials === undefined ? {} : { credentials: o.credentials }),
        ...(fail === undefined
          ? {}
          : { faults: (s) => (s.op === fail.op && s.id === fail.id ? runtimeError(s.id, 'injected fault') : undefined) }),
      }),
    );
    if (o.location !== undefined) return b;
    return {
      ...b,
      close: async () => {
        await b.close();
        for (const d of engines(b)) await purge(d, b.instanceId);
      },
    };
  };

/** Starts an http server on a free loopback port; answers its base URL. */
export const listenLoopback = async (server: HttpServer): Promise<string> => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = server.address();
  return `http://127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`;
};

/** Closes a loopback http server, cutting its open connections. */
export const closeLoopback = async (server: HttpServer): Promise<void> => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
};

/** A classic-level database at `location` whose batches fail when `hit(keys)` says so. */
export const faultyDb = (location: string, hit: (keys: readonly string[]) => boolean): StringLevel => {
  const db = new Level<string, string>(location, { valueEncoding: 'utf8' }) as unknown as StringLevel;
  const batch = db.batch.bind(db) as (ops: { key: string }[]) => Promise<void>;
  Object.assign(db, {
    batch: async (ops: { key: string }[]) => {
      if (hit(ops.map((o) => o.key))) throw new Error('injected write failure');
      return batch(ops);
    },
  });
  return db;
};

/** One HTTP request over a connection (`tasks.connect`'s stream): the status and the whole body. */
export const httpOver = (conn: Duplex, path: string, body?: Uint8Array): Promise<{ status: number; body: Buffer }> =>
  new Promise((res, rej) => {
    const method = body === undefined ? 'GET' : 'POST';
    const req = request({ createConnection: () => conn, path, method, host: 'task' }, (r) => {
      const parts: Buffer[] = [];
      r.on('data', (c: Buffer) => parts.push(c));
      r.on('end', () => res({ status: r.statusCode ?? 0, body: Buffer.concat(parts) }));
      r.on('error', rej);
    });
    req.on('error', rej);
    req.end(body);
  });
