/**
 * Image sources beyond data and a registry: an http(s) URL of an archive (served here on
 * loopback), a git repository at a ref (a bare repository made here, built by the engine with no
 * network), and a path on this machine. Each with progress; each failure typed, nothing left.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sha256, text, unwrap, type Progress } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { closeLoopback, listenLoopback, n, tarOf } from './support.js';

const docker = new Docker();
const BASE = 'image://local/base';
let l: DockerBackend;
let saved: Buffer; // a docker save archive of BASE
let rootfs: Uint8Array; // a root filesystem tar
let bigfs: Uint8Array; // a root filesystem tar with one large entry (half of it ends mid-entry)
let server: Server;
let url = '';
const work = mkdtempSync(join(tmpdir(), 'lessl-sources-'));

/** Labelled images of this registry, and the temporary clones lessl left. */
const leftovers = async (): Promise<{ images: number; clones: number }> => ({
  images: (await docker.listImages({ filters: { label: [`lessl.registry=${l.instanceId}`] } })).length,
  clones: readdirSync(tmpdir()).filter((f) => f.startsWith('lessl-git-')).length,
});

/** Creates an image from `source` that must not come to be; answers the tag of the error (or 'Right'). */
const tagOf = async (stem: string, source: Record<string, unknown>, ctx = {}): Promise<string> => {
  const id = `image://local/${n(stem)}`;
  const r = await l.stores.image.create({ id, options: { source } }, ctx)();
  expect(E.isLeft(await l.stores.image.read(id)())).toBe(true);
  return E.isLeft(r) ? r.left._tag : 'Right';
};

beforeAll(async () => {
  l = await unwrap(openDockerBackend());
  await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
  const parts: Buffer[] = [];
  for await (const c of (await unwrap(l.exportImage(BASE))) as AsyncIterable<Buffer>) parts.push(c);
  saved = Buffer.concat(parts);
  rootfs = await tarOf({ 'hello.txt': 'hello from a url\n' });
  bigfs = await tarOf({ 'big.txt': 'x'.repeat(256 * 1024) });
  server = createServer((req, res) => {
    // /half/<image|rootfs>: half of the content, then nothing; /cut/...: half, then the connection is reset
    const broken = /^\/(half|cut)\/(image|rootfs)$/.exec(req.url ?? '');
    if (broken !== null) {
      const body = broken[2] === 'image' ? saved : bigfs;
      res.writeHead(200, { 'content-length': String(body.length) });
      res.write(body.subarray(0, body.length >> 1));
      if (broken[1] === 'cut') setTimeout(() => res.destroy(), 100);
      return;
    }
    if (req.url === '/image.tar') res.end(saved);
    else if (req.url === '/rootfs.tar') res.end(rootfs);
    else if (req.url === '/to-file') res.writeHead(302, { location: 'file:///etc/passwd' }).end();
    else if (req.url === '/to-other') res.writeHead(302, { location: 'http://127.0.0.2:1/image.tar' }).end();
    else if (req.url?.startsWith('/git/') === true && !req.url.includes('..'))
      // a bare repository over git's "dumb" http protocol: its files as they are
      void readFile(join(work, 'repo.git', new URL(req.url, 'http://x').pathname.slice(5))).then(
        (b) => res.end(b),
        () => res.writeHead(404).end(),
      );
    else if (req.url?.startsWith('/git-stall/') === true) {
      // a git server that answers the ref advertisement's headers and a few bytes, then nothing
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('0'.repeat(16));
    } else if (req.url === '/stall') {
      res.writeHead(200, { 'content-length': String(saved.length) });
      res.write(saved.subarray(0, 1024)); // then nothing more
    } else res.writeHead(404).end('no such file');
  });
  url = await listenLoopback(server);
});
afterAll(async () => {
  await closeLoopback(server);
  await l.close();
  await purge(docker, l.instanceId);
  rmSync(work, { recursive: true, force: true });
});

describe('url', () => {
  test('a docker save archive and a root filesystem tar, checksums verified, progress in bytes', async () => {
    const seen: Progress[] = [];
    const id = `image://local/${n('url')}`;
    const el = await unwrap(
      l.stores.image.create(
        { id, options: { source: { type: 'url', url: `${url}/image.tar`, checksum: sha256(saved) } } },
        { onProgress: (p) => seen.push(p) },
      ),
    );
    const base = await unwrap(l.stores.image.read(BASE));
    expect(el.attributes.imageId).toBe(base.attributes.imageId);
    expect(seen.at(-1)).toMatchObject({ phase: 'download', bytes: saved.length, totalBytes: saved.length });
    const fs = `image://local/${n('urlfs')}`;
    await unwrap(
      l.stores.image.create({
        id: fs,
        parent: BASE,
        options: { source: { type: 'url', url: `${url}/rootfs.tar`, format: 'rootfs' } },
      }),
    );
    const r = await unwrap(l.run({ image: fs, spec: { cmd: ['cat', '/hello.txt'] } }));
    expect(text(r.stdout)).toBe('hello from a url\n');
    await unwrap(l.stores.image.delete(fs));
    await unwrap(l.stores.image.delete(id));
  });

  test('bad sources are typed errors and leave nothing: checksum, 404, redirect to file:, stall, size, abort', async () => {
    const before = await leftovers();
    const wrong = `sha256:${'0'.repeat(64)}`;
    expect(await tagOf('bad', { type: 'url', url: `${url}/image.tar`, checksum: wrong })).toBe('ChecksumMismatch');
    expect(await tagOf('bad', { type: 'url', url: `${url}/nothing.tar` })).toBe('InvalidEntry');
    expect(await tagOf('bad', { type: 'url', url: `${url}/to-file` })).toBe('Unavailable');
    expect(await tagOf('bad', { type: 'url', url: `${url}/stall`, stallMs: 500 })).toBe('Unavailable');
    expect(await tagOf('bad', { type: 'url', url: `${url}/image.tar`, maxBytes: 1000 })).toBe('InvalidEntry');
    expect(await tagOf('bad', { type: 'url', url: 'file:///etc/passwd' })).toBe('InvalidEntry');
    expect(await tagOf('bad', { type: 'url', url: `${url}/image.tar`, extra: 1 })).toBe('InvalidEntry');
    expect(await tagOf('bad', { type: 'url', url: `${url}/stall` }, { signal: AbortSignal.timeout(300) })).toBe('Aborted');
    expect(await leftovers()).toEqual(before);
  });
});

describe('broken streams', () => {
  /** The tag a create answers (and that it left no element). */
  const tagOf = async (req: Record<string, unknown>, ctx = {}): Promise<string> => {
    const id = `image://local/${n('broken')}`;
    const r = await l.stores.image.create({ id, ...req }, ctx)();
    expect(E.isLeft(await l.stores.image.read(id)())).toBe(true);
    return E.isLeft(r) ? r.left._tag : 'Right';
  };

  test('a download broken mid-entry (stalled, reset, aborted), in both formats: typed errors, nothing left, the process lives', async () => {
    const before = await leftovers();
    for (const format of ['image', 'rootfs'] as const) {
      const parent = format === 'rootfs' ? { parent: BASE } : {};
      const checksum = sha256(format === 'image' ? saved : bigfs);
      const source = (how: string, extra = {}): Record<string, unknown> => ({
        ...parent,
        options: { source: { type: 'url', url: `${url}/${how}/${format}`, format, ...extra } },
      });
      expect(await tagOf(source('half', { stallMs: 500 })), `${format}: stall`).toBe('Unavailable');
      expect(await tagOf(source('cut')), `${format}: reset`).toBe('Unavailable');
      expect(await tagOf(source('half'), { signal: AbortSignal.timeout(500) }), `${format}: abort`).toBe('Aborted');
      expect(await tagOf(source('half', { checksum }), { signal: AbortSignal.timeout(500) }), `${format}: abort`).toBe('Aborted');
    }
    expect(await leftovers()).toEqual(before);
  });

  test('a data stream that fails mid-entry fails its create (import, put on a parent, tarball load); the process lives', async () => {
    const before = await leftovers();
    /** The first half of `bytes`, then the caller's stream fails. */
    const failing = (bytes: Uint8Array): AsyncIterable<Uint8Array> =>
      (async function* () {
        yield bytes.subarray(0, bytes.length >> 1);
        await new Promise((r) => setTimeout(r, 50));
        throw new Error('the caller’s stream broke');
      })();
    expect(await tagOf({ data: failing(bigfs) })).toBe('RuntimeError');
    expect(await tagOf({ data: failing(bigfs), parent: BASE })).toBe('RuntimeError');
    expect(await tagOf({ data: failing(saved), options: { source: { type: 'tarball' } } })).toBe('RuntimeError');
    expect(await leftovers()).toEqual(before);
  });
});

describe('registry: broken pulls', () => {
  let proxy: TcpServer;
  let proxied = ''; // 127.0.0.1:<port> in front of the registry on 127.0.0.1:5000
  let repo = '';
  const sockets = new Set<Socket>();
  beforeAll(async () => {
    // an image whose one layer (1 MiB of noise) is on no engine: its pull downloads it
    const tmp = `image://local/${n('noise')}`;
    const el = await unwrap(
      l.stores.image.create({ id: tmp, data: await tarOf({ 'noise.txt': randomBytes(768 * 1024).toString('base64') }) }),
    );
    repo = `lessl-test/${n('noise')}`;
    await docker.getImage(String(el.attributes.imageId)).tag({ repo: `127.0.0.1:5000/${repo}`, tag: 'v1' });
    const push = await docker.getImage(`127.0.0.1:5000/${repo}:v1`).push({ authconfig: { serveraddress: '127.0.0.1:5000' } });
    await new Promise<void>((res, rej) => docker.modem.followProgress(push, (e) => (e ? rej(e) : res())));
    await docker.getImage(`127.0.0.1:5000/${repo}:v1`).remove();
    await unwrap(l.stores.image.delete(tmp));
    // a TCP proxy that forwards the first 64 KiB the registry sends on each connection, then nothing
    proxy = createTcpServer((client) => {
      const upstream = connect(5000, '127.0.0.1');
      for (const s of [client, upstream]) {
        sockets.add(s);
        s.on('error', () => undefined);
        s.on('close', () => (client.destroy(), upstream.destroy()));
      }
      client.pipe(upstream);
      let sent = 0;
      upstream.on('data', (c: Buffer) => {
        if (sent < 64 * 1024) client.write(c.subarray(0, 64 * 1024 - sent));
        sent += c.length;
      });
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const a = proxy.address();
    proxied = `127.0.0.1:${typeof a === 'object' && a !== null ? a.port : 0}`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => proxy.close(r));
  });

  test('a pull that stalls mid-layer answers Unavailable, an aborted one Aborted: no image, no element, the process lives', async () => {
    const before = await leftovers();
    const ref = `${proxied}/${repo}:v1`;
    expect(await tagOf('pull', { type: 'registry', ref, stallMs: 1000 })).toBe('Unavailable');
    // no stall bound in sight: only the abort can end this one (a started pull used to ignore it)
    expect(await tagOf('pull', { type: 'registry', ref, stallMs: 3_600_000 }, { signal: AbortSignal.timeout(1000) })).toBe(
      'Aborted',
    );
    expect(await leftovers()).toEqual(before);
    const pulled = await docker.listImages({ filters: { reference: [`${proxied}/${repo}`] } });
    expect(pulled).toEqual([]);
  });
});

describe('git', () => {
  let repo = '';
  beforeAll(async () => {
    const base = await unwrap(l.stores.image.read(BASE));
    const src = join(work, 'src');
    repo = join(work, 'repo.git');
    const git = (...args: string[]): string =>
      execFileSync('git', ['-c', 'user.name=lessl', '-c', 'user.email=lessl@localhost', ...args], { cwd: src }).toString();
    execFileSync('mkdir', ['-p', src]);
    git('init', '--quiet', '--initial-branch=main');
    writeFileSync(join(src, 'hello.txt'), 'v1\n');
    writeFileSync(
      join(src, 'Dockerfile'),
      `FROM ${String(base.attributes.ref)}\nCOPY hello.txt /hello.txt\nRUN cat /hello.txt > /copied\n`,
    );
    git('add', '.');
    git('commit', '--quiet', '-m', 'v1');
    git('tag', 'v1');
    writeFileSync(join(src, 'hello.txt'), 'v2\n');
    git('commit', '--quiet', '-am', 'v2');
    execFileSync('git', ['clone', '--quiet', '--bare', src, repo]);
    execFileSync('git', ['update-server-info'], { cwd: repo });
  });

  test('a repository at a ref is cloned and built with no network; build steps are reported', async () => {
    const seen: Progress[] = [];
    const id = `image://local/${n('git')}`;
    await unwrap(
      l.stores.image.create({ id, options: { source: { type: 'git', repo, ref: 'v1' } } }, { onProgress: (p) => seen.push(p) }),
    );
    const r = await unwrap(l.run({ image: id, spec: { cmd: ['cat', '/copied'] } }));
    expect(text(r.stdout)).toBe('v1\n');
    const steps = seen.filter((p) => p.phase === 'build').map((p) => p.detail);
    expect(steps).toContain('COPY hello.txt /hello.txt');
    expect(steps.at(-1)).toBe('done');
    expect(seen[0]).toMatchObject({ phase: 'clone' });
    const head = `image://local/${n('githead')}`;
    await unwrap(l.stores.image.create({ id: head, options: { source: { type: 'git', repo } } }));
    expect(text((await unwrap(l.run({ image: head, spec: { cmd: ['cat', '/hello.txt'] } }))).stdout)).toBe('v2\n');
    await unwrap(l.stores.image.delete(head));
    await unwrap(l.stores.image.delete(id));
    expect((await leftovers()).clones).toBe(0);
  });

  test('a missing repository or ref, a FROM image not on the engine, a failing build: InvalidEntry, nothing left', async () => {
    const before = await leftovers();
    const fails = async (source: Record<string, unknown>, key: string): Promise<void> => {
      const r = await l.stores.image.create({ id: `image://local/${n('badgit')}`, options: { source } })();
      expect(E.isLeft(r) && [r.left._tag, r.left._tag === 'InvalidEntry' ? r.left.keys : []]).toEqual(['InvalidEntry', [key]]);
    };
    await fails({ type: 'git', repo: join(work, 'nothing.git') }, 'options.source.repo');
    await fails({ type: 'git', repo, ref: 'v9' }, 'options.source.ref');
    const other = join(work, 'other');
    execFileSync('mkdir', ['-p', other]);
    const git = (...args: string[]): void => {
      execFileSync('git', ['-c', 'user.name=lessl', '-c', 'user.email=lessl@localhost', ...args], { cwd: other });
    };
    git('init', '--quiet');
    writeFileSync(join(other, 'Dockerfile'), 'FROM lessl-test/not-here:1\n');
    git('add', '.');
    git('commit', '--quiet', '-m', 'missing base');
    await fails({ type: 'git', repo: other }, 'options.source');
    const base = await unwrap(l.stores.image.read(BASE));
    writeFileSync(join(other, 'Dockerfile'), `FROM ${String(base.attributes.ref)}\nRUN exit 3\n`);
    git('commit', '--quiet', '-am', 'failing step');
    await fails({ type: 'git', repo: other }, 'options.source');
    expect(await leftovers()).toEqual(before);
  });
});

describe('git: broken clones', () => {
  test('a clone that stalls answers Unavailable, an aborted one Aborted: no image, no element, no clone left', async () => {
    const before = await leftovers();
    const repo = `${url}/git-stall/repo.git`;
    expect(await tagOf('gitstall', { type: 'git', repo, stallMs: 1000 })).toBe('Unavailable');
    expect(await tagOf('gitstall', { type: 'git', repo, stallMs: 3_600_000 }, { signal: AbortSignal.timeout(500) })).toBe(
      'Aborted',
    );
    expect(await leftovers()).toEqual(before);
  });
});

describe('egress guard (SSRF)', () => {
  const guarded: DockerBackend[] = [];
  const open = async (allowNetworks: string[]): Promise<DockerBackend> => {
    const b = await unwrap(openDockerBackend({ egress: { allowNetworks } }));
    guarded.push(b);
    return b;
  };
  afterAll(async () => {
    for (const b of guarded) {
      await b.close();
      await purge(docker, b.instanceId);
    }
  });
  const refusal = async (b: DockerBackend, source: Record<string, unknown>): Promise<unknown> => {
    const id = `image://local/${n('egress')}`;
    const r = await b.stores.image.create({ id, options: { source } })();
    expect(E.isLeft(await b.stores.image.read(id)())).toBe(true);
    return E.isLeft(r)
      ? { tag: r.left._tag, keys: r.left._tag === 'InvalidEntry' ? r.left.keys : [], message: r.left.message }
      : 'Right';
  };
  const port = (): string => new URL(url).port;

  test('loopback URL and http git sources are InvalidEntry naming the address: a literal, localhost, a redirect', async () => {
    const b = await open([]);
    const urlKey = ['options.source.url'];
    expect(await refusal(b, { type: 'url', url: `${url}/image.tar` })).toMatchObject({
      tag: 'InvalidEntry',
      keys: urlKey,
      message: expect.stringMatching(/127\.0\.0\.1 is loopback \(127\.0\.0\.0\/8\)/),
    });
    expect(await refusal(b, { type: 'url', url: `http://localhost:${port()}/image.tar` })).toMatchObject({
      keys: urlKey,
      message: expect.stringMatching(/localhost: 127\.0\.0\.1 is loopback/),
    });
    expect(await refusal(b, { type: 'git', repo: `http://localhost:${port()}/git/` })).toMatchObject({
      tag: 'InvalidEntry',
      keys: ['options.source.repo'],
      message: expect.stringMatching(/localhost: 127\.0\.0\.1 is loopback/),
    });
    const allowed = await open(['127.0.0.1/32']);
    expect(await refusal(allowed, { type: 'url', url: `${url}/to-other` })).toMatchObject({
      keys: urlKey,
      message: expect.stringMatching(/127\.0\.0\.2 is loopback/),
    });
  });

  test('allowNetworks lets a URL (by name too) and an http git clone (pinned to the checked address) through', async () => {
    const b = await open(['127.0.0.1/32']);
    const viaName = await unwrap(
      b.stores.image.create({
        id: `image://local/${n('egress-ok')}`,
        options: { source: { type: 'url', url: `http://localhost:${port()}/image.tar` } },
      }),
    );
    expect(viaName.attributes.imageId).toBe((await unwrap(l.stores.image.read(BASE))).attributes.imageId);
    // the git build's FROM image must be on the engine: it is (BASE, same engine)
    const git = await unwrap(
      b.stores.image.create({
        id: `image://local/${n('egress-git')}`,
        options: { source: { type: 'git', repo: `http://localhost:${port()}/git/`, ref: 'v1' } },
      }),
    );
    expect(text((await unwrap(b.run({ image: git.id, spec: { cmd: ['cat', '/copied'] } }))).stdout)).toBe('v1\n');
  });

  test('an allowNetworks entry that is not an address or CIDR is InvalidEntry at open', async () => {
    const r = await openDockerBackend({ egress: { allowNetworks: ['10.0.0.0/8', 'ten'] } })();
    expect(E.isLeft(r) && [r.left._tag, r.left.message]).toEqual([
      'InvalidEntry',
      'egress.allowNetworks: not an address or CIDR: ten',
    ]);
  });
});

describe('path', () => {
  test('a docker save archive, a root filesystem tar and a directory on this machine; a missing path is InvalidEntry', async () => {
    const archive = join(work, 'image.tar');
    writeFileSync(archive, saved);
    const fsTar = join(work, 'rootfs.tar');
    writeFileSync(fsTar, rootfs);
    const a = `image://local/${n('patha')}`;
    await unwrap(l.stores.image.create({ id: a, options: { source: { type: 'path', path: archive } } }));
    const b = `image://local/${n('pathb')}`;
    await unwrap(
      l.stores.image.create({ id: b, parent: BASE, options: { source: { type: 'path', path: fsTar, format: 'rootfs' } } }),
    );
    expect(text((await unwrap(l.run({ image: b, spec: { cmd: ['cat', '/hello.txt'] } }))).stdout)).toBe('hello from a url\n');
    const missing = await l.stores.image.create({
      id: `image://local/${n('pathc')}`,
      options: { source: { type: 'path', path: '/nope' } },
    })();
    expect(E.isLeft(missing) && missing.left._tag).toBe('InvalidEntry');
    await unwrap(l.stores.image.delete(b));
    await unwrap(l.stores.image.delete(a));
  });
});

describe('path: aborted imports', () => {
  test('a root filesystem tar and a directory aborted in the middle of their import answer Aborted and leave nothing', async () => {
    const before = await leftovers();
    // 64 MiB of incompressible data: the import takes long enough to be aborted in the middle
    const dir = join(work, 'bigdir');
    execFileSync('mkdir', ['-p', dir]);
    for (let i = 0; i < 4; i++) writeFileSync(join(dir, `noise-${i}.bin`), randomBytes(16 * 1024 * 1024));
    const tarFile = join(work, 'big-rootfs.tar');
    execFileSync('tar', ['-cf', tarFile, '-C', dir, '.']);
    for (const source of [
      { type: 'path', path: tarFile, format: 'rootfs' },
      { type: 'directory', path: dir },
    ]) {
      expect(await tagOf('pathabort', source, { signal: AbortSignal.timeout(150) }), JSON.stringify(source)).toBe('Aborted');
    }
    rmSync(dir, { recursive: true, force: true });
    rmSync(tarFile, { force: true });
    expect(await leftovers()).toEqual(before);
  });
});
