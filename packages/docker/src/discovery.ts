/**
 * Engine discovery, as the `docker` CLI finds its engine (docs/docker.md#finding-the-engine):
 * `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` for tcp), else the context named
 * by `DOCKER_CONTEXT`, else the `currentContext` of `$DOCKER_CONFIG/config.json` (default
 * `~/.docker`), else the rootless socket `$XDG_RUNTIME_DIR/docker.sock`, else
 * `/var/run/docker.sock`. A place that is set (an environment variable, a context) is the answer
 * or the error: only the two default sockets fall through to the next. Every place looked at is
 * reported with why it was passed over or failed.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent } from 'node:https';
import { homedir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { invalidEntry, unavailable, type InvalidEntry, type Unavailable } from '@lessl/core';
import { dockerSystem } from './client/system.js';
import { CallGuard, DEFAULT_CALL_TIMEOUT_MS } from './guard.js';

/** Where an engine was found: the variable, the context, or one of the two default sockets. */
export type EngineSource = 'DOCKER_HOST' | 'DOCKER_CONTEXT' | 'currentContext' | 'rootless' | 'default';

/** A place discovery looked at and why it did not answer (`not set`, the connection error, ...). */
export interface EngineAttempt {
  readonly source: EngineSource;
  /** The place in words: `DOCKER_HOST=tcp://...`, `context h1 (/home/.docker/contexts/meta/.../meta.json)`. */
  readonly place: string;
  readonly failure: string;
}

/** TLS of a tcp engine: client certificate and key, the CA to verify with, or no verification. */
export interface EngineTls {
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  /** The server's certificate is not verified (`SkipTLSVerify` of a context). */
  readonly skipVerify: boolean;
}

/** Where an engine is and how to talk to it. */
export interface EngineEndpoint {
  readonly source: EngineSource;
  readonly place: string;
  /** `unix:///path` or `tcp://host:port`. */
  readonly url: string;
  readonly tls?: EngineTls;
}

/** The engine discovery found: its endpoint, a client for it, and the places passed over before it. */
export interface DiscoveredEngine extends EngineEndpoint {
  readonly docker: Docker;
  readonly tried: readonly EngineAttempt[];
}

/** What discovery reads: the environment and the home directory (defaults: this process's). */
export interface DiscoveryInput {
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly home?: string;
  /** Bound of each ping (default 30,000 ms). */
  readonly timeoutMs?: number;
  /** The default socket, last in the search (default `/var/run/docker.sock`). */
  readonly defaultSocket?: string;
}

/** The socket of the default context. */
export const DEFAULT_SOCKET = '/var/run/docker.sock';

/** One step of the search: a place passed over, or an endpoint to ping (`final`: its failure ends the search). */
type Step =
  | { readonly kind: 'skip'; readonly attempt: EngineAttempt }
  | { readonly kind: 'try'; readonly endpoint: EngineEndpoint; readonly final: boolean };

const skip = (source: EngineSource, place: string, failure: string): Step => ({
  kind: 'skip',
  attempt: { source, place, failure },
});

const ContextMetaC = t.type({
  Name: t.string,
  Endpoints: t.type({
    docker: t.intersection([t.type({ Host: t.string }), t.partial({ SkipTLSVerify: t.boolean })]),
  }),
});
const ConfigC = t.partial({ currentContext: t.string });

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** Reads a file that may be absent (`undefined`); other failures throw. */
const readIfThere = (path: string): string | undefined => {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof Error && 'code' in err && err.code === 'ENOENT') return undefined;
    throw err;
  }
};

/** A JSON file decoded with `codec`, or the InvalidEntry naming the file. */
const decodeFile = <A>(path: string, text: string, codec: t.Type<A, unknown>, key: string): E.Either<InvalidEntry, A> => {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return E.left(invalidEntry(`${path}: not JSON: ${messageOf(err)}`, '', [key]));
  }
  const d = codec.decode(json);
  if (E.isRight(d)) return d;
  const at = d.left
    .map((e) =>
      e.context
        .map((c) => c.key)
        .filter((k) => k !== '')
        .join('.'),
    )
    .filter((k) => k !== '');
  return E.left(invalidEntry(`${path}: malformed (${at.length > 0 ? at.join(', ') : 'its shape'})`, '', [key]));
};

/** Checks a Host URL's scheme (tcp or unix, as lessl speaks them). */
const checkUrl = (url: string, where: string, key: string): E.Either<InvalidEntry, string> =>
  /^(unix:\/\/\/.+|tcp:\/\/[^/]+)$/.test(url)
    ? E.right(url)
    : E.left(invalidEntry(`${where}: ${url} is not unix:///path or tcp://host:port`, '', [key]));

/** Step 1: `DOCKER_HOST`, with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH` for tcp. */
const fromDockerHost = (env: DiscoveryInput['env'] & object, config: string): E.Either<InvalidEntry, Step> => {
  const host = env.DOCKER_HOST;
  if (host === undefined || host === '') return E.right(skip('DOCKER_HOST', 'DOCKER_HOST', 'not set'));
  const place = `DOCKER_HOST=${host}`;
  const url = checkUrl(host, place, 'DOCKER_HOST');
  if (E.isLeft(url)) return url;
  const verify = env.DOCKER_TLS_VERIFY !== undefined && env.DOCKER_TLS_VERIFY !== '';
  if (!verify || host.startsWith('unix://'))
    return E.right({ kind: 'try', endpoint: { source: 'DOCKER_HOST', place, url: host }, final: true });
  const dir = env.DOCKER_CERT_PATH !== undefined && env.DOCKER_CERT_PATH !== '' ? env.DOCKER_CERT_PATH : config;
  const files = tlsFiles(dir, 'DOCKER_CERT_PATH', true);
  if (E.isLeft(files)) return files;
  const endpoint: EngineEndpoint = {
    source: 'DOCKER_HOST',
    place: `${place} (TLS, ${dir})`,
    url: host,
    tls: { ...files.right, skipVerify: false },
  };
  return E.right({ kind: 'try', endpoint, final: true });
};

/** The PEM files of a directory: ca.pem, cert.pem, key.pem (each required when `required`). */
const tlsFiles = (dir: string, key: string, required: boolean): E.Either<InvalidEntry, Omit<EngineTls, 'skipVerify'>> => {
  const out: Record<string, string> = {};
  for (const f of ['ca', 'cert', 'key']) {
    const path = join(dir, `${f}.pem`);
    let text: string | undefined;
    try {
      text = readIfThere(path);
    } catch (err) {
      return E.left(invalidEntry(`${path}: ${messageOf(err)}`, '', [key]));
    }
    if (text === undefined && required) return E.left(invalidEntry(`${path}: no such file`, '', [key]));
    if (text !== undefined) out[f] = text;
  }
  return E.right(out);
};

/** The directory name the CLI stores a context under: the sha256 of its name. */
export const contextDir = (name: string): string => createHash('sha256').update(name).digest('hex');

/** A named context's endpoint (`meta.json` and its TLS files), or the InvalidEntry naming it. */
const fromContext = (
  config: string,
  name: string,
  source: EngineSource,
  key: string,
  socket: string,
): E.Either<InvalidEntry, Step> => {
  if (name === 'default')
    return E.right({ kind: 'try', endpoint: defaultSocket(socket, `context default (${socket})`), final: true });
  const meta = join(config, 'contexts', 'meta', contextDir(name), 'meta.json');
  let text: string | undefined;
  try {
    text = readIfThere(meta);
  } catch (err) {
    return E.left(invalidEntry(`context ${name}: ${meta}: ${messageOf(err)}`, '', [key]));
  }
  if (text === undefined) return E.left(invalidEntry(`context ${name} does not exist (no ${meta})`, '', [key]));
  const m = decodeFile(meta, text, ContextMetaC, key);
  if (E.isLeft(m)) return E.left(invalidEntry(`context ${name}: ${m.left.message}`, '', [key]));
  const place = `context ${name} (${meta})`;
  const { Host: host, SkipTLSVerify: skipVerify = false } = m.right.Endpoints.docker;
  const url = checkUrl(host, place, key);
  if (E.isLeft(url)) return url;
  const files = tlsFiles(join(config, 'contexts', 'tls', contextDir(name), 'docker'), key, false);
  if (E.isLeft(files)) return files;
  const withTls = host.startsWith('tcp://') && (skipVerify || Object.keys(files.right).length > 0);
  const endpoint: EngineEndpoint = { source, place, url: host, ...(withTls ? { tls: { ...files.right, skipVerify } } : {}) };
  return E.right({ kind: 'try', endpoint, final: true });
};

/** Steps 2 and 3: `DOCKER_CONTEXT`, else `currentContext` of config.json. */
const fromContexts = (env: DiscoveryInput['env'] & object, config: string, socket: string): E.Either<InvalidEntry, Step[]> => {
  const named = env.DOCKER_CONTEXT;
  if (named !== undefined && named !== '')
    return E.map((s: Step) => [s])(fromContext(config, named, 'DOCKER_CONTEXT', 'DOCKER_CONTEXT', socket));
  const passed = skip('DOCKER_CONTEXT', 'DOCKER_CONTEXT', 'not set');
  const file = join(config, 'config.json');
  let text: string | undefined;
  try {
    text = readIfThere(file);
  } catch (err) {
    return E.left(invalidEntry(`${file}: ${messageOf(err)}`, '', ['currentContext']));
  }
  if (text === undefined) return E.right([passed, skip('currentContext', file, 'no such file')]);
  const c = decodeFile(file, text, ConfigC, 'currentContext');
  if (E.isLeft(c)) return c;
  const current = c.right.currentContext;
  if (current === undefined || current === '') return E.right([passed, skip('currentContext', file, 'no currentContext')]);
  return E.map((s: Step) => [passed, s])(fromContext(config, current, 'currentContext', 'currentContext', socket));
};

const defaultSocket = (socket: string, place = socket): EngineEndpoint => ({ source: 'default', place, url: `unix://${socket}` });

/** Steps 4 and 5: the rootless socket, then the default one. */
const defaults = (env: DiscoveryInput['env'] & object, socket: string): Step[] => {
  const xdg = env.XDG_RUNTIME_DIR;
  const rootless: Step =
    xdg === undefined || xdg === ''
      ? skip('rootless', '$XDG_RUNTIME_DIR/docker.sock', 'XDG_RUNTIME_DIR not set')
      : {
          kind: 'try',
          endpoint: { source: 'rootless', place: join(xdg, 'docker.sock'), url: `unix://${join(xdg, 'docker.sock')}` },
          final: false,
        };
  return [rootless, { kind: 'try', endpoint: defaultSocket(socket), final: false }];
};

/** The places to look at, in order (a set variable or context that is wrong: the InvalidEntry naming it). */
const discoverySteps = (input: DiscoveryInput = {}): E.Either<InvalidEntry, readonly Step[]> => {
  const env = input.env ?? process.env;
  const dockerConfig = env.DOCKER_CONFIG;
  const config = dockerConfig !== undefined && dockerConfig !== '' ? dockerConfig : join(input.home ?? homedir(), '.docker');
  const host = fromDockerHost(env, config);
  if (E.isLeft(host)) return host;
  if (host.right.kind === 'try') return E.right([host.right]);
  const socket = input.defaultSocket ?? DEFAULT_SOCKET;
  const contexts = fromContexts(env, config, socket);
  if (E.isLeft(contexts)) return contexts;
  const steps = [host.right, ...contexts.right];
  return E.right(steps.some((s) => s.kind === 'try') ? steps : [...steps, ...defaults(env, socket)]);
};

/** A dockerode client for an endpoint. */
export const clientOf = (e: EngineEndpoint): Docker => {
  if (e.url.startsWith('unix://')) return new Docker({ socketPath: e.url.slice('unix://'.length) });
  const u = new URL(e.url.replace(/^tcp:/, 'http:'));
  const protocol = e.tls === undefined ? 'http' : 'https';
  const port = u.port === '' ? (protocol === 'https' ? 2376 : 2375) : Number(u.port);
  if (e.tls === undefined) return new Docker({ host: u.hostname, port, protocol });
  const { ca, cert, key, skipVerify } = e.tls;
  const tls = {
    ...(ca === undefined ? {} : { ca }),
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
  };
  // dockerode has no switch for an unverified server: an agent that does not verify carries it
  const agent = skipVerify ? new Agent({ ...tls, rejectUnauthorized: false }) : undefined;
  return new Docker({ host: u.hostname, port, protocol, ...tls, ...(agent === undefined ? {} : { agent }) });
};

/** Pings an endpoint: `undefined` when it answers, else why not. */
const ping = async (e: EngineEndpoint, ms: number): Promise<{ docker: Docker } | { failure: string }> => {
  let docker: Docker;
  try {
    docker = clientOf(e);
  } catch (err) {
    return { failure: `no client: ${messageOf(err)}` };
  }
  const guard = new CallGuard(ms, e.place);
  return dockerSystem(docker, guard.run)
    .ping()
    .then(
      () => ({ docker }),
      (err: unknown) => ({ failure: messageOf(err) }),
    );
};

/** The places looked at, one a line, for an error message. */
export const describeAttempts = (tried: readonly EngineAttempt[]): string =>
  tried.map((a) => `  - ${a.source === a.place ? a.place : `${a.source}: ${a.place}`}: ${a.failure}`).join('\n');

/**
 * Finds the engine as the `docker` CLI does (see the module comment) and pings it. Answers the
 * engine with its client and the places passed over before it; a variable, config file or context
 * that is wrong is `InvalidEntry` naming it; no engine answering is `Unavailable` listing every
 * place looked at and why each failed.
 * @example
 * const found = await discoverEngine({ env: { DOCKER_CONTEXT: 'remote' } })();
 * if (found._tag === 'Right') console.log(found.right.source, found.right.url);
 */
export const discoverEngine =
  (input: DiscoveryInput = {}): TaskEither<InvalidEntry | Unavailable, DiscoveredEngine> =>
  async () => {
    const steps = discoverySteps(input);
    if (E.isLeft(steps)) return steps;
    const tried: EngineAttempt[] = [];
    for (const s of steps.right) {
      if (s.kind === 'skip') {
        tried.push(s.attempt);
        continue;
      }
      const r = await ping(s.endpoint, input.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
      if ('docker' in r) return E.right({ ...s.endpoint, docker: r.docker, tried });
      tried.push({ source: s.endpoint.source, place: s.endpoint.place, failure: r.failure });
      if (s.final)
        return E.left(
          unavailable(
            '',
            `the Docker engine of ${s.endpoint.place} does not answer: ${r.failure}\nlooked at:\n${describeAttempts(tried)}`,
          ),
        );
    }
    return E.left(
      unavailable(
        '',
        `no Docker engine answers; looked at:\n${describeAttempts(tried)}\nstart one, e.g. \`dockerd --bridge=none --iptables=false --ip-forward=false &\`, or set DOCKER_HOST or DOCKER_CONTEXT`,
      ),
    );
  };
