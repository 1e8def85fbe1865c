/**
 * Engine discovery as the `docker` CLI does it, against real engines: the root engine's socket
 * and engine h1 of scripts/hosts.sh over TCP and mutual TLS. Each case has its own DOCKER_CONFIG
 * (a temp directory laid out as the CLI's context store) and passes its environment explicitly;
 * one case opens a whole backend in a child process that has only that environment.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { contextDir, DEFAULT_SOCKET, discoverEngine, type DiscoveredEngine } from '@lessl/docker';
import { client, hostNamed, testHosts, type TestHost } from './hosts-support.js';

const hosts = testHosts();
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fresh temp directory (removed after the file). */
const temp = (stem: string): string => {
  const d = mkdtempSync(join(tmpdir(), `lessl-${stem}-`));
  dirs.push(d);
  return d;
};

/** A DOCKER_CONFIG with contexts as the CLI stores them, and `currentContext` when given. */
const dockerConfig = (
  contexts: Record<string, { host: string; skipTlsVerify?: boolean; tls?: TestHost['tls'] } | string>,
  current?: string,
): string => {
  const config = temp('docker-config');
  for (const [name, c] of Object.entries(contexts)) {
    const meta = join(config, 'contexts', 'meta', contextDir(name));
    mkdirSync(meta, { recursive: true });
    if (typeof c === 'string') {
      writeFileSync(join(meta, 'meta.json'), c);
      continue;
    }
    const docker = { Host: c.host, SkipTLSVerify: c.skipTlsVerify ?? false };
    writeFileSync(join(meta, 'meta.json'), JSON.stringify({ Name: name, Metadata: {}, Endpoints: { docker } }));
    if (c.tls !== undefined) {
      const tls = join(config, 'contexts', 'tls', contextDir(name), 'docker');
      mkdirSync(tls, { recursive: true });
      for (const f of ['ca', 'cert', 'key'] as const) copyFileSync(c.tls[f], join(tls, `${f}.pem`));
    }
  }
  if (current !== undefined) writeFileSync(join(config, 'config.json'), JSON.stringify({ currentContext: current }));
  return config;
};

/** The engine's own ID (`docker info`), to tell engines apart. */
const engineId = async (docker: Docker): Promise<string> => {
  const info: unknown = await docker.info();
  const id = typeof info === 'object' && info !== null && 'ID' in info ? info.ID : undefined;
  return typeof id === 'string' ? id : '';
};

const found = async (env: Record<string, string>): Promise<DiscoveredEngine> => {
  const r = await discoverEngine({ env, home: temp('home'), timeoutMs: 5000 })();
  if (r._tag === 'Left') throw new Error(`${r.left._tag}: ${r.left.message}`);
  return r.right;
};

const failed = async (env: Record<string, string>): Promise<{ tag: string; message: string }> => {
  const r = await discoverEngine({ env, home: temp('home'), timeoutMs: 5000 })();
  if (r._tag === 'Right') throw new Error(`found ${r.right.url}, expected a failure`);
  return { tag: r.left._tag, message: r.left.message };
};

const root = new Docker({ socketPath: DEFAULT_SOCKET });

describe('discovery on the root engine', () => {
  it('the current context of config.json, pointing at the root engine socket', async () => {
    const config = dockerConfig({ here: { host: `unix://${DEFAULT_SOCKET}` } }, 'here');
    const e = await found({ DOCKER_CONFIG: config });
    expect(e.source).toBe('currentContext');
    expect(e.place).toContain(join(config, 'contexts', 'meta', contextDir('here'), 'meta.json'));
    expect(await engineId(e.docker)).toBe(await engineId(root));
    expect(e.tried.map((a) => [a.source, a.failure])).toEqual([
      ['DOCKER_HOST', 'not set'],
      ['DOCKER_CONTEXT', 'not set'],
    ]);
  });

  it('~/.docker under the home given, and context default meaning the default socket', async () => {
    const home = temp('home');
    mkdirSync(join(home, '.docker'));
    writeFileSync(join(home, '.docker', 'config.json'), JSON.stringify({ currentContext: 'default', auths: {} }));
    const r = await discoverEngine({ env: {}, home })();
    if (r._tag === 'Left') throw new Error(r.left.message);
    expect(r.right.url).toBe(`unix://${DEFAULT_SOCKET}`);
    expect(r.right.place).toContain('context default');
  });

  it('the rootless socket under XDG_RUNTIME_DIR comes before the default one', async () => {
    const xdg = temp('xdg');
    symlinkSync(DEFAULT_SOCKET, join(xdg, 'docker.sock'));
    const e = await found({ XDG_RUNTIME_DIR: xdg });
    expect(e.source).toBe('rootless');
    expect(e.url).toBe(`unix://${join(xdg, 'docker.sock')}`);
    expect(await engineId(e.docker)).toBe(await engineId(root));
    // no rootless socket there: the default one, and why the rootless one was passed over
    const e2 = await found({ XDG_RUNTIME_DIR: temp('xdg-empty') });
    expect(e2.source).toBe('default');
    expect(e2.tried.at(-1)).toMatchObject({ source: 'rootless', failure: expect.stringContaining('ENOENT') });
  });

  it('a malformed meta.json, a missing context, a config.json that is not JSON: InvalidEntry naming them', async () => {
    const config = dockerConfig({ broken: '{"Name": "broken", "Endpoints": {"docker": {"Host": 42}}}', notjson: '{' }, 'broken');
    const meta = join(config, 'contexts', 'meta', contextDir('broken'), 'meta.json');
    const bad = await failed({ DOCKER_CONFIG: config });
    expect(bad.tag).toBe('InvalidEntry');
    expect(bad.message).toContain('context broken');
    expect(bad.message).toContain(meta);
    const notJson = await failed({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'notjson' });
    expect(notJson.message).toMatch(/context notjson: .*meta\.json: not JSON/);
    const missing = await failed({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'nowhere' });
    expect(missing.tag).toBe('InvalidEntry');
    expect(missing.message).toContain('context nowhere does not exist');
    writeFileSync(join(config, 'config.json'), '{ currentContext: ');
    const cfg = await failed({ DOCKER_CONFIG: config });
    expect(cfg.message).toContain(join(config, 'config.json'));
    const scheme = await failed({ DOCKER_HOST: 'ssh://me@far' });
    expect(scheme).toMatchObject({ tag: 'InvalidEntry', message: expect.stringContaining('DOCKER_HOST=ssh://me@far') });
  });

  it('a context whose host does not answer: Unavailable naming the context, no fall-through', async () => {
    const config = dockerConfig({ dead: { host: 'tcp://127.0.0.1:1' } }, 'dead');
    const e = await failed({ DOCKER_CONFIG: config });
    expect(e.tag).toBe('Unavailable');
    expect(e.message).toContain('context dead');
    expect(e.message).toContain('ECONNREFUSED');
  });

  it('nothing answers: Unavailable listing every place looked at and why', async () => {
    const xdg = temp('xdg-empty');
    const config = temp('docker-config');
    const env = { DOCKER_CONFIG: config, XDG_RUNTIME_DIR: xdg };
    const r = await discoverEngine({ env, home: temp('home'), defaultSocket: join(xdg, 'default.sock') })();
    if (r._tag === 'Right') throw new Error(`found ${r.right.url}`);
    expect(r.left._tag).toBe('Unavailable');
    const lines = r.left.message.split('\n');
    expect(lines[0]).toBe('no Docker engine answers; looked at:');
    expect(lines.slice(1, 6)).toEqual([
      '  - DOCKER_HOST: not set',
      '  - DOCKER_CONTEXT: not set',
      `  - currentContext: ${join(config, 'config.json')}: no such file`,
      `  - rootless: ${join(xdg, 'docker.sock')}: connect ENOENT ${join(xdg, 'docker.sock')}`,
      `  - default: ${join(xdg, 'default.sock')}: connect ENOENT ${join(xdg, 'default.sock')}`,
    ]);
  });
});

describe.skipIf(hosts === undefined)('discovery of a TLS engine (h1)', () => {
  const h1 = (): TestHost => hostNamed(hosts ?? { registry: '', hosts: [], swarm: { manager: '', workers: [] } }, 'h1');

  it('DOCKER_CONTEXT selects a context over TCP and mutual TLS', async () => {
    const config = dockerConfig({ here: { host: `unix://${DEFAULT_SOCKET}` }, h1: { host: h1().url, tls: h1().tls } }, 'here');
    const e = await found({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'h1' });
    expect(e.source).toBe('DOCKER_CONTEXT');
    expect(e.url).toBe(h1().url);
    expect(e.tls?.skipVerify).toBe(false);
    expect(await engineId(e.docker)).toBe(await engineId(client(h1())));
    expect(await engineId(e.docker)).not.toBe(await engineId(root));
  });

  it('SkipTLSVerify: the server certificate is not checked, the client certificate is still sent', async () => {
    const { cert, key } = h1().tls;
    const tls = { ca: '/dev/null', cert, key };
    const config = dockerConfig({ loose: { host: h1().url, tls, skipTlsVerify: true } });
    // a CA that signed nothing: verification would fail
    writeFileSync(join(config, 'contexts', 'tls', contextDir('loose'), 'docker', 'ca.pem'), '');
    const e = await found({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'loose' });
    expect(await engineId(e.docker)).toBe(await engineId(client(h1())));
  });

  it('DOCKER_HOST wins over DOCKER_CONTEXT and the current context', async () => {
    const config = dockerConfig({ h1: { host: h1().url, tls: h1().tls } }, 'h1');
    const e = await found({ DOCKER_CONFIG: config, DOCKER_CONTEXT: 'h1', DOCKER_HOST: `unix://${DEFAULT_SOCKET}` });
    expect(e.source).toBe('DOCKER_HOST');
    expect(await engineId(e.docker)).toBe(await engineId(root));
  });

  it('DOCKER_HOST over tcp with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH', async () => {
    const certs = temp('certs');
    for (const f of ['ca', 'cert', 'key'] as const) copyFileSync(h1().tls[f], join(certs, `${f}.pem`));
    const e = await found({ DOCKER_HOST: h1().url, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs });
    expect(e.tls).toMatchObject({ skipVerify: false });
    expect(await engineId(e.docker)).toBe(await engineId(client(h1())));
    // DOCKER_TLS_VERIFY empty: plain TCP as the CLI does, which a TLS engine refuses
    const plain = await failed({ DOCKER_HOST: h1().url, DOCKER_TLS_VERIFY: '', DOCKER_CERT_PATH: certs });
    expect(plain.tag).toBe('Unavailable');
    expect(plain.message).toContain(`DOCKER_HOST=${h1().url}`);
    // a certificate directory without the files: InvalidEntry naming the file
    const none = await failed({ DOCKER_HOST: h1().url, DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: temp('no-certs') });
    expect(none).toMatchObject({ tag: 'InvalidEntry', message: expect.stringContaining('ca.pem: no such file') });
  });

  it('openDockerBackend() with no engine options uses the context the environment selects', async () => {
    const config = dockerConfig({ h1: { host: h1().url, tls: h1().tls } }, 'h1');
    const script = [
      "import { openDockerBackend } from '@lessl/docker';",
      'const r = await openDockerBackend({ watch: false })();',
      "if (r._tag === 'Left') { console.log(JSON.stringify({ error: r.left._tag, message: r.left.message })); process.exit(0); }",
      'const info = await r.right.docker.info();',
      'console.log(JSON.stringify({ endpoint: r.right.hosts.list()[0].endpoint, id: info.ID }));',
      'await r.right.close();',
    ].join('\n');
    const env = { PATH: process.env.PATH ?? '', HOME: temp('home'), DOCKER_CONFIG: config };
    const run = promisify(execFile);
    const out = await run(process.execPath, ['--input-type=module', '-e', script], { env, cwd: join(import.meta.dirname, '..') });
    const got: unknown = JSON.parse(out.stdout.trim().split('\n').at(-1) ?? '{}');
    expect(got).toEqual({ endpoint: `https://${new URL(h1().url).host}`, id: await engineId(client(h1())) });
    // the same process with a context that does not exist: the typed error, naming it
    const bad = await run(process.execPath, ['--input-type=module', '-e', script], {
      env: { ...env, DOCKER_CONTEXT: 'gone' },
      cwd: join(import.meta.dirname, '..'),
    });
    expect(JSON.parse(bad.stdout.trim())).toMatchObject({
      error: 'InvalidEntry',
      message: expect.stringContaining('context gone'),
    });
  });
});
