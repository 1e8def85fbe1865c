/**
 * The extra engines of `scripts/hosts.sh` (h1-h3 and the Swarm s1 + s2, each in its own network
 * namespace), as described by `/run/lessl-hosts/hosts.json`, and dockerode clients for them.
 * See docs/hosts.md.
 */
import { existsSync, readFileSync } from 'node:fs';
import Docker from 'dockerode';

/** Where `scripts/hosts.sh up` writes its description (override: LESSL_HOSTS_FILE). */
export const HOSTS_FILE = process.env.LESSL_HOSTS_FILE ?? '/run/lessl-hosts/hosts.json';

/** One engine of `scripts/hosts.sh`. */
export interface TestHost {
  readonly name: string;
  /** Its unix socket (path). */
  readonly socket: string;
  /** `tcp://<address>:2376`, mutual TLS. */
  readonly url: string;
  /** The client's certificate files (PEM paths). */
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string };
  readonly pidfile: string;
  /** Its address on the 10.99.0.0/24 lan. */
  readonly address: string;
  /** Its network namespace (`ip -n <netns> ...`). */
  readonly netns: string;
}

/** `/run/lessl-hosts/hosts.json`. */
export interface HostsFile {
  /** `host:port` of the registry every engine reaches. */
  readonly registry: string;
  readonly hosts: readonly TestHost[];
  readonly swarm: { readonly manager: string; readonly workers: readonly string[] };
}

/**
 * The engines of `scripts/hosts.sh`, or undefined when it did not run. Under `CI=true` a missing
 * file throws: there, these tests fail rather than skip.
 */
export const testHosts = (): HostsFile | undefined => {
  if (!existsSync(HOSTS_FILE)) {
    if (process.env.CI === 'true')
      throw new Error(`${HOSTS_FILE} is missing: run \`bash scripts/hosts.sh up\` (as root) before the tests`);
    return undefined;
  }
  return JSON.parse(readFileSync(HOSTS_FILE, 'utf8')) as HostsFile;
};

/** The engine called `name`. */
export const hostNamed = (f: HostsFile, name: string): TestHost => {
  const h = f.hosts.find((x) => x.name === name);
  if (h === undefined) throw new Error(`no engine ${name} in ${HOSTS_FILE}`);
  return h;
};

/** The TLS connection options of an engine (its https URL and the client's certificates). */
export const tlsOptions = (h: TestHost): Docker.DockerOptions => {
  const u = new URL(h.url);
  return {
    protocol: 'https',
    host: u.hostname,
    port: Number(u.port),
    ca: readFileSync(h.tls.ca),
    cert: readFileSync(h.tls.cert),
    key: readFileSync(h.tls.key),
  };
};

/** A dockerode client for an engine, over its unix socket (default) or over mutual TLS. */
export const client = (h: TestHost, via: 'socket' | 'tls' = 'socket'): Docker =>
  new Docker(via === 'socket' ? { socketPath: h.socket } : tlsOptions(h));
