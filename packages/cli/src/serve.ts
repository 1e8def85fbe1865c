/**
 * `lessl serve`: the task service (`createServer` of `@lessl/service`) in this process.
 */
import { mkdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { decodeOptions, keyOf, unwrap } from '@lessl/core';
import { busyboxRootfsBytes, SwarmOptionsC, type SwarmOptions } from '@lessl/docker';
import { openMemoryBackend, tinyShell, type FakeProcess } from '@lessl/memory';
import {
  createServer,
  ownerAuthorizer,
  serviceFunctionAuthorizer,
  type LesslServer,
  type PolicyOptions,
  type ServerOptions,
} from '@lessl/service';
import { clientProblem, LesslError } from './client.js';
import { messageOf } from './unknown.js';

type Durability = NonNullable<ServerOptions['durability']>;

/** Options of `lessl serve`. */
export interface ServeOptions {
  /** Directory of the on-disk database (default: env LESSL_DATA, else ~/.local/share/lessl). */
  readonly data?: string;
  /** The memory backend instead of Docker: commands run in a tiny fake shell (echo, sleep, exit); on disk only with `data`. */
  readonly memory?: boolean;
  /** How durable acknowledged writes are (default `disk`: fsynced). */
  readonly durability?: 'disk' | 'process';
  /** Retention windows in seconds (flags win over the config file's `retention`). */
  readonly retainTasks?: number;
  readonly retainJobs?: number;
  readonly retainEvents?: number;
  readonly host?: string;
  readonly port?: number;
  /** Jobs run at once. */
  readonly concurrency?: number;
  /** A JSON file with operator policy (defaults, maxima, ttl, networks, fetch limits, allowNetworks). */
  readonly policy?: string;
  /** fastify/pino log level (default: no request log). */
  readonly logLevel?: string;
  readonly bodyLimit?: number;
  /** Seconds between TTL reaper passes. */
  readonly reapInterval?: number;
  /** Adds a public image `busybox` made from the host's /bin/busybox when it is missing (the memory backend always has one). */
  readonly busybox?: boolean;
  /**
   * A JSON file: `{ policy?, pool?, preload?, retention?, docker?: { swarm?, directPorts? } }` (see `ServerOptions`;
   * `docker.swarm`: run tasks as Swarm services, the Docker backend's `swarm` option); `--policy`
   * wins over its policy.
   */
  readonly config?: string;
  /** TLS: the certificate (PEM, chain after it) file; with `tlsKey`, both or neither. */
  readonly tlsCert?: string;
  /** TLS: the private key (PEM, unencrypted) file of `tlsCert`. */
  readonly tlsKey?: string;
  /** Seconds the proxy waits for a daemon's response head before answering 504 (default 30). */
  readonly proxyTimeout?: number;
}

/** What `--config` holds. */
interface ConfigFile {
  readonly policy?: PolicyOptions;
  readonly pool?: ServerOptions['pool'];
  readonly preload?: ServerOptions['preload'];
  readonly retention?: ServerOptions['retention'];
  /**
   * The Docker backend: `swarm` runs tasks as Swarm services (docs/swarm.md); `directPorts: false`
   * reaches daemons' ports through the engine only (docs/docker.md#task-ports).
   */
  readonly docker?: { readonly swarm?: SwarmOptions; readonly directPorts?: boolean };
}

const CONFIG_KEYS = ['policy', 'pool', 'preload', 'retention', 'docker'];

/** The config file's `docker` section, decoded strictly: an unknown key or a bad value is an error naming it (`docker.swarm.registry`). */
const dockerSection = (file: string, u: unknown): ConfigFile['docker'] => {
  const d = decodeOptions({ swarm: SwarmOptionsC, directPorts: t.boolean }, u, `--config ${file}`, { prefix: 'docker' });
  if (E.isLeft(d)) throw new LesslError(clientProblem('InvalidEntry', d.left.message, 0, d.left.keys));
  return d.right;
};

const readConfig = async (file: string): Promise<ConfigFile> => {
  let u: unknown;
  try {
    u = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    throw new LesslError(clientProblem('InvalidEntry', `--config ${file}: ${messageOf(e)}`, 0, ['config']));
  }
  const extra =
    typeof u === 'object' && u !== null && !Array.isArray(u)
      ? Object.keys(u).filter((k) => !CONFIG_KEYS.includes(k))
      : ['(not an object)'];
  if (extra.length > 0)
    throw new LesslError(
      clientProblem('InvalidEntry', `--config ${file}: unknown keys ${extra.join(', ')} (${CONFIG_KEYS.join(', ')})`, 0, extra),
    );
  const config = u as ConfigFile;
  return config.docker === undefined ? config : { ...config, docker: dockerSection(file, config.docker) };
};

/** The default data directory of `lessl serve`. */
export const defaultDataDir = (): string =>
  process.env.LESSL_DATA ?? join(process.env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'lessl');

/** The memory backend's tiny shell, taking `/bin/sh -c` as `sh -c` (a lone `cat` copies its stdin). */
export const memoryShell: FakeProcess = (spec, io) =>
  tinyShell({ ...spec, cmd: spec.cmd[0] === '/bin/sh' ? ['sh', ...spec.cmd.slice(1)] : spec.cmd }, io);

const readPolicy = async (file: string): Promise<PolicyOptions> => {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as PolicyOptions;
  } catch (e) {
    throw new LesslError(clientProblem('InvalidEntry', `--policy ${file}: ${messageOf(e)}`, 0, ['policy']));
  }
};

/** The memory backend of `--memory`: its registry under `data` when given (else in memory). */
const openMemory = async (data: string | undefined, durability: Durability) => {
  if (data !== undefined) mkdirSync(data, { recursive: true });
  return unwrap(
    openMemoryBackend({
      authorize: ownerAuthorizer,
      authorizeFunction: serviceFunctionAuthorizer,
      run: memoryShell,
      durability,
      ...(data === undefined ? {} : { registry: { location: join(data, 'memory-registry') } }),
    }),
  );
};

/** Reads one PEM file of a TLS flag; a missing or unreadable one is an error naming the flag. */
const readPem = async (flag: string, file: string): Promise<Buffer> => {
  try {
    return await readFile(file);
  } catch (e) {
    throw new LesslError(clientProblem('InvalidEntry', `${flag} ${file}: ${messageOf(e)}`, 0, [flag.slice(2)]));
  }
};

/** The certificate and key of `--tls-cert` and `--tls-key` (both or neither), read. */
const tlsOf = async (o: ServeOptions): Promise<ServerOptions['tls']> => {
  if (o.tlsCert === undefined && o.tlsKey === undefined) return undefined;
  if (o.tlsCert === undefined || o.tlsKey === undefined) {
    const [has, lacks] = o.tlsCert === undefined ? ['--tls-key', '--tls-cert'] : ['--tls-cert', '--tls-key'];
    throw new LesslError(clientProblem('InvalidEntry', `${has} needs ${lacks} (both or neither)`, 0, [lacks.slice(2)]));
  }
  const pair = { cert: await readPem('--tls-cert', o.tlsCert), key: await readPem('--tls-key', o.tlsKey) };
  try {
    createSecureContext(pair);
  } catch (e) {
    const why = `--tls-cert ${o.tlsCert} and --tls-key ${o.tlsKey} are not a usable pair: ${messageOf(e)}`;
    throw new LesslError(clientProblem('InvalidEntry', why, 0, ['tls-key']));
  }
  return pair;
};

/** The retention windows: the flags over the config file's (undefined: the service's defaults). */
const retentionOf = (o: ServeOptions, config: ConfigFile): ServerOptions['retention'] => {
  const flags = {
    ...(o.retainTasks === undefined ? {} : { tasks: o.retainTasks }),
    ...(o.retainJobs === undefined ? {} : { jobs: o.retainJobs }),
    ...(o.retainEvents === undefined ? {} : { events: o.retainEvents }),
  };
  return config.retention === undefined && Object.keys(flags).length === 0 ? undefined : { ...config.retention, ...flags };
};

/**
 * The admin token read from the file env LESSL_ADMIN_TOKEN_FILE names (e.g. a Docker secret,
 * `/run/secrets/...`), trimmed; undefined without it (the service reads LESSL_ADMIN_TOKEN itself).
 * Both set, an unreadable file or an empty one stop the start.
 */
const adminTokenFile = async (): Promise<string | undefined> => {
  const file = process.env.LESSL_ADMIN_TOKEN_FILE;
  if (file === undefined || file === '') return undefined;
  const refuse = (why: string): never => {
    throw new LesslError(clientProblem('InvalidEntry', `LESSL_ADMIN_TOKEN_FILE ${file}: ${why}`, 0, ['LESSL_ADMIN_TOKEN_FILE']));
  };
  if ((process.env.LESSL_ADMIN_TOKEN ?? '') !== '') refuse('LESSL_ADMIN_TOKEN is set too (one or the other)');
  const token = await readFile(file, 'utf8').then(
    (t) => t.trim(),
    (e: unknown) => refuse(messageOf(e)),
  );
  return token === '' ? refuse('the file is empty') : token;
};

/** The Docker backend's options of the config file (`docker.swarm`, `docker.directPorts`); refused with `--memory`, which has no engine. */
const dockerOf = (o: ServeOptions, config: ConfigFile): Pick<ServerOptions, 'docker'> => {
  const { swarm, directPorts } = config.docker ?? {};
  const given = [...(swarm === undefined ? [] : ['docker.swarm']), ...(directPorts === undefined ? [] : ['docker.directPorts'])];
  if (given.length === 0) return {};
  if (o.memory === true)
    throw new LesslError(
      clientProblem('InvalidEntry', `--config: ${given.join(', ')} needs the Docker backend (not --memory)`, 0, given),
    );
  return { docker: { ...(swarm === undefined ? {} : { swarm }), ...(directPorts === undefined ? {} : { directPorts }) } };
};

/** Starts the service and listens; answers it, its URL and how to stop it (closing what it opened). */
export const serve = async (o: ServeOptions): Promise<{ server: LesslServer; url: string; close: () => Promise<void> }> => {
  const tls = await tlsOf(o); // first: a bad pair opens nothing
  const config: ConfigFile = o.config === undefined ? {} : await readConfig(o.config);
  const policy = o.policy === undefined ? config.policy : await readPolicy(o.policy);
  const durability = o.durability ?? 'disk';
  const docker = dockerOf(o, config); // before the backend opens
  const adminToken = await adminTokenFile();
  const backend = o.memory === true ? await openMemory(o.data, durability) : undefined;
  const retention = retentionOf(o, config);
  const opts: ServerOptions = {
    ...(backend === undefined
      ? { data: o.data ?? defaultDataDir() }
      : { backend, ...(o.data === undefined ? {} : { data: o.data }) }),
    durability,
    ...docker,
    ...(adminToken === undefined ? {} : { adminToken }),
    ...(retention === undefined ? {} : { retention }),
    ...(config.pool === undefined ? {} : { pool: config.pool }),
    ...(config.preload === undefined ? {} : { preload: config.preload }),
    ...(policy === undefined ? {} : { policy }),
    ...(o.concurrency === undefined ? {} : { concurrency: o.concurrency }),
    ...(o.logLevel === undefined ? {} : { logger: { level: o.logLevel } }),
    ...(o.bodyLimit === undefined ? {} : { bodyLimit: o.bodyLimit }),
    ...(o.reapInterval === undefined ? {} : { reapIntervalMs: o.reapInterval * 1000 }),
    ...(tls === undefined ? {} : { tls }),
    ...(o.proxyTimeout === undefined ? {} : { proxyTimeoutMs: Math.max(1, Math.round(o.proxyTimeout * 1000)) }),
  };
  const server = await createServer(opts);
  const b = server.backend;
  const busybox = keyOf('image', 'local', 'busybox');
  if ((backend !== undefined || o.busybox === true) && E.isLeft(await b.stores.image.read(busybox)()))
    await unwrap(
      b.stores.image.create({
        id: busybox,
        data: backend !== undefined ? new Uint8Array([1, 2, 3]) : await busyboxRootfsBytes(),
      }),
    );
  const url = await server.listen({ host: o.host ?? '127.0.0.1', port: o.port ?? 8080 });
  return {
    server,
    url,
    close: async () => {
      await server.close();
      await backend?.close();
    },
  };
};

/** How long `lessl serve` lets open requests (followed logs, event streams, `?wait`) finish after SIGTERM/SIGINT before it cuts them. */
export const DRAIN_MS = 3_000;
/** The bound on `lessl serve`'s shutdown: past it, it says so and exits with status 1 anyway. */
export const SHUTDOWN_MS = 10_000;

/**
 * Waits for SIGTERM or SIGINT, then shuts the service down within `SHUTDOWN_MS`: it stops
 * listening and claiming jobs, cuts requests still open after `DRAIN_MS`, and closes the backend.
 * Running tasks keep running in their containers; the next start reconciles them and resumes
 * their jobs. A second signal exits at once. Answers the exit status.
 */
export const untilSignal = async (
  s: { server: LesslServer; close: () => Promise<void> },
  err: NodeJS.WritableStream,
): Promise<number> => {
  // phase 1: the signal
  const sig = await new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  err.write(`lessl: ${sig}: shutting down (at most ${SHUTDOWN_MS / 1000} s; running tasks are reconciled at the next start)\n`);
  // phase 2: the bounds (timers that do not keep the process alive)
  const now = (): void => process.exit(1);
  process.once('SIGINT', now).once('SIGTERM', now);
  const cut = setTimeout(() => s.server.app.server.closeAllConnections(), DRAIN_MS).unref();
  const deadline = setTimeout(() => {
    err.write(`lessl: the shutdown did not finish within ${SHUTDOWN_MS / 1000} s: exiting anyway\n`);
    process.exit(1);
  }, SHUTDOWN_MS).unref();
  // phase 3: the close
  await s.close();
  clearTimeout(cut);
  clearTimeout(deadline);
  process.off('SIGINT', now).off('SIGTERM', now);
  return 0;
};
