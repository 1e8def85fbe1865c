/**
 * Where an image comes from (`options.source` of an image create), and getting its content to
 * the engine with progress and cancellation:
 * - `registry`: pulled (a registry error inside the progress stream is an error);
 * - `tarball`: `data` is a `docker save` archive, loaded;
 * - `directory` / `path`: a directory on this machine (imported as a root filesystem), or a file
 *   (a `docker save` archive, loaded; `format: 'rootfs'` imports a root filesystem tar);
 * - `url`: an http(s) URL of such a file, streamed (size bound, stall bound, optional checksum);
 * - `git`: a repository at a ref, cloned, then built by the engine from its Dockerfile, with no
 *   network and never pulling: every `FROM` image must already be on the engine.
 * Temporary files (a clone) are removed whatever happens.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline, Readable, Transform } from 'node:stream';
import { promisify } from 'node:util';
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { pack as packDir } from 'tar-fs';
import { aborted, checksumMismatch, decodeExact, invalidEntry, unavailable, type AnyError, type Progress } from '@lessl/core';
import { egressRefusal, guardedFetch, type EgressGuard } from './egress.js';

const abs = (p: string): boolean => p.startsWith('/') && !p.includes('\0');
const AbsPath = new t.Type<string, string, unknown>(
  'AbsolutePath',
  (u): u is string => typeof u === 'string' && abs(u),
  (u, c) => (typeof u === 'string' && abs(u) ? t.success(u) : t.failure(u, c, 'an absolute path')),
  (s) => s,
);
const Format = t.union([t.literal('image'), t.literal('rootfs')]);
const Positive = new t.Type<number, number, unknown>(
  'PositiveInteger',
  (u): u is number => Number.isSafeInteger(u) && (u as number) > 0,
  (u, c) => (Number.isSafeInteger(u) && (u as number) > 0 ? t.success(u as number) : t.failure(u, c, 'a positive integer')),
  (n) => n,
);

/** `options.source` of an image create (see the module comment). */
export const ImageSourceC = t.union([
  t.intersection([t.type({ type: t.literal('registry'), ref: t.string }), t.partial({ stallMs: Positive })]),
  t.type({ type: t.literal('tarball') }),
  t.type({ type: t.literal('directory'), path: AbsPath }),
  t.intersection([t.type({ type: t.literal('path'), path: AbsPath }), t.partial({ format: Format })]),
  t.intersection([
    t.type({ type: t.literal('url'), url: t.string }),
    t.partial({ format: Format, checksum: t.string, maxBytes: Positive, stallMs: Positive }),
  ]),
  t.intersection([
    t.type({ type: t.literal('git'), repo: t.string }),
    t.partial({ ref: t.string, dockerfile: t.string, buildArgs: t.record(t.string, t.string), stallMs: Positive }),
  ]),
]);
/** Where an image comes from. */
export type ImageSource = t.TypeOf<typeof ImageSourceC>;

/** Defaults of a URL source. */
export const URL_DEFAULTS = { maxBytes: 4 * 1024 ** 3, stallMs: 30_000 } as const;
/** Defaults of a registry source: a pull with no progress message for `stallMs` fails. */
export const REGISTRY_DEFAULTS = { stallMs: 30_000 } as const;
/** Defaults of a git source: a clone that moves less than a byte a second for `stallMs` (rounded up to seconds) fails. */
export const GIT_DEFAULTS = { stallMs: 30_000 } as const;

/** A URL without its user and password (what an element records of its source). */
const withoutUserinfo = (u: string): string => {
  try {
    const url = new URL(u);
    if (url.username === '' && url.password === '') return u;
    url.username = '';
    url.password = '';
    return url.toString();
  } catch {
    return u.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^/@]*@/i, '$1'); // scp-like or odd: drop anything before an @ in the authority
  }
};

/**
 * What an image element records of its source (`attributes.source`), so `refresh` can fetch it
 * again: the source without credentials (a URL's or repository's user and password are dropped).
 * Sources that cannot be fetched again (`tarball`: data the caller streamed) record nothing.
 */
export const recordableSource = (s: ImageSource | undefined): ImageSource | undefined => {
  if (s === undefined || s.type === 'tarball') return undefined;
  if (s.type === 'url') return { ...s, url: withoutUserinfo(s.url) };
  if (s.type === 'git') return { ...s, repo: withoutUserinfo(s.repo) };
  return s;
};

/** A pass-through that hashes what flows (sha256); `digest()` once the stream has ended. */
export const hashing = (): { stream: Transform; digest: () => string } => {
  const hash = createHash('sha256');
  let out: string | undefined;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  return { stream, digest: () => (out ??= `sha256:${hash.digest('hex')}`) };
};

/** Decodes `options.source` exactly (unknown fields refused). */
export const parseSource = (id: string, u: unknown): E.Either<AnyError, ImageSource | undefined> => {
  if (u === undefined) return E.right(undefined);
  const typeOf = (u as { type?: unknown } | null)?.type;
  const codec = ImageSourceC.types.find((c) => {
    const first = c instanceof t.IntersectionType ? (c.types as t.Mixed[])[0] : c;
    return (first as t.InterfaceType<t.Props>).props.type?.is(typeOf) === true;
  });
  if (codec === undefined)
    return E.left(
      invalidEntry('options.source.type must be registry, tarball, directory, path, url or git', id, ['options.source.type']),
    );
  const r = decodeExact(codec, id, u, 'options.source', 'options.source');
  if (E.isLeft(r)) return r;
  const s = r.right as ImageSource;
  if (s.type === 'registry' && s.ref === '')
    return E.left(invalidEntry('a registry source needs a ref', id, ['options.source.ref']));
  if (s.type === 'url' && !/^https?:\/\//i.test(s.url))
    return E.left(invalidEntry('a url source takes http or https URLs only', id, ['options.source.url']));
  return E.right(s);
};

/** A progress callback that never throws into the create (a caller's throwing callback is ignored). */
export const reporter =
  (cb: ((p: Progress) => void) | undefined) =>
  (p: Progress): void => {
    try {
      cb?.(p);
    } catch {
      /* the caller's callback failed: progress is advisory */
    }
  };

/** Counts the bytes flowing through, reporting every 256 KiB and at the end. */
export const counting = (phase: string, report: (p: Progress) => void, totalBytes?: number): Transform => {
  let bytes = 0;
  let last = 0;
  const total = totalBytes === undefined ? {} : { totalBytes };
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length;
      if (bytes - last >= 256 * 1024) {
        last = bytes;
        report({ phase, bytes, ...total });
      }
      done(null, chunk);
    },
    flush(done) {
      report({ phase, bytes, ...total });
      done();
    },
  });
};

/** Layer progress of a pull, from Docker's JSON messages. */
export const pullProgress = (report: (p: Progress) => void): ((m: Record<string, unknown>) => void) => {
  const layers = new Map<string, { current: number; total: number; done: boolean }>();
  return (m) => {
    const id = typeof m.id === 'string' ? m.id : undefined;
    const status = typeof m.status === 'string' ? m.status : '';
    if (status === '') return;
    // layer lines carry the layer's ID; the others (Pulling from, Digest, Status) are reported as they are
    if (id !== undefined && /layer|download|extract|pull complete|already exists|waiting|verifying/i.test(status)) {
      const l = layers.get(id) ?? { current: 0, total: 0, done: false };
      const d = m.progressDetail as { current?: unknown; total?: unknown } | undefined;
      if (typeof d?.current === 'number' && /download/i.test(status)) l.current = d.current;
      if (typeof d?.total === 'number' && /download/i.test(status)) l.total = d.total;
      if (/pull complete|already exists/i.test(status)) l.done = true;
      layers.set(id, l);
    }
    const all = [...layers.values()];
    report({
      phase: 'pull',
      bytes: all.reduce((a, x) => a + x.current, 0),
      totalBytes: all.reduce((a, x) => a + x.total, 0),
      done: all.filter((x) => x.done).length,
      total: all.length,
      detail: id === undefined ? status : `${id}: ${status}`,
    });
  };
};

/** What a file-like source gives: a stream in one of two formats, and a check once it is consumed. */
export interface Content {
  readonly format: 'image' | 'rootfs';
  readonly stream: Readable;
  /** After the stream is consumed: a checksum mismatch or a broken download, if any. */
  readonly verify: () => E.Either<AnyError, void>;
  /** After the stream is consumed: the sha256 of the bytes (`refresh` compares it to tell unchanged content). */
  readonly digest: () => string;
}

/** A directory or file on this machine. */
export const fromPath = async (
  id: string,
  path: string,
  format: 'image' | 'rootfs' | undefined,
  report: (p: Progress) => void,
): Promise<E.Either<AnyError, Content | { directory: string }>> => {
  const st = await stat(path).catch(() => undefined);
  if (st === undefined) return E.left(invalidEntry(`no such file or directory: ${path}`, id, ['options.source.path']));
  if (st.isDirectory()) return E.right({ directory: path });
  if (!st.isFile()) return E.left(invalidEntry(`not a file or directory: ${path}`, id, ['options.source.path']));
  const h = hashing();
  const stream = pipeline(createReadStream(path), h.stream, counting('read', report, st.size), () => undefined);
  return E.right({ format: format ?? 'image', stream, verify: () => E.right(undefined), digest: h.digest });
};

/**
 * An http(s) download, streamed: refused when it answers an error status, redirects to another
 * scheme, is larger than `maxBytes`, or sends nothing for `stallMs`; hashed on the way when a
 * checksum is given. With `egress`, an address it refuses (at any redirect) is `InvalidEntry`
 * naming it. Aborting `signal` stops it.
 */
export const fromUrl = async (
  id: string,
  src: Extract<ImageSource, { type: 'url' }>,
  report: (p: Progress) => void,
  signal?: AbortSignal,
  egress?: EgressGuard,
): Promise<E.Either<AnyError, Content>> => {
  const maxBytes = src.maxBytes ?? URL_DEFAULTS.maxBytes;
  const stallMs = src.stallMs ?? URL_DEFAULTS.stallMs;
  const want = src.checksum;
  if (want !== undefined && !/^sha256:[0-9a-f]{64}$/.test(want))
    return E.left(invalidEntry('options.source.checksum must be sha256:<64 hex>', id, ['options.source.checksum']));
  const ac = new AbortController();
  /** Why the download failed, set where it fails (before the consumer hears of it). */
  let failure: AnyError | undefined;
  const stop = (): void => {
    failure ??= aborted(id, signal?.reason);
    ac.abort(signal?.reason);
  };
  if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
  signal?.addEventListener('abort', stop, { once: true });
  let stalled = false;
  let timer: NodeJS.Timeout | undefined;
  const settle = (): void => {
    clearTimeout(timer);
    signal?.removeEventListener('abort', stop);
  };
  const arm = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stalled = true;
      ac.abort();
    }, stallMs);
    timer.unref();
  };
  arm();
  let res: Response;
  try {
    res = await guardedFetch(src.url, { signal: ac.signal, redirect: 'follow' }, egress);
  } catch (err) {
    settle();
    const refused = egressRefusal(err);
    if (refused !== undefined) return E.left(invalidEntry(`${src.url} refused: ${refused}`, id, ['options.source.url']));
    const why = stalled ? `no answer within ${stallMs} ms` : describe(err);
    return E.left(failure ?? unavailable(id, `could not download ${src.url}: ${why}`, err));
  }
  if (!res.ok || res.body === null) {
    settle();
    await res.body?.cancel().catch(() => undefined);
    return E.left(invalidEntry(`GET ${src.url} answered ${res.status} ${res.statusText}`, id, ['options.source.url']));
  }
  const length = Number(res.headers.get('content-length') ?? Number.NaN);
  if (length > maxBytes) {
    settle();
    await res.body.cancel().catch(() => undefined);
    return E.left(invalidEntry(`${src.url} is ${length} bytes, more than maxBytes ${maxBytes}`, id, ['options.source.url']));
  }
  const hash = createHash('sha256');
  let digest: string | undefined;
  let bytes = 0;
  let complete = false;
  const guard = new Transform({
    transform(chunk: Buffer, _enc, done) {
      arm();
      bytes += chunk.length;
      if (bytes > maxBytes) {
        failure ??= invalidEntry(`${src.url} sent more than maxBytes ${maxBytes}`, id, ['options.source.url']);
        done(new Error(failure.message));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
    flush(done) {
      complete = true;
      settle();
      done();
    },
  });
  const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>);
  body.on('error', (err) => {
    failure ??= stalled
      ? unavailable(id, `${src.url} stalled: nothing for ${stallMs} ms`)
      : unavailable(id, `download of ${src.url} failed: ${describe(err)}`, err);
  });
  // every stage has an error path: a failure anywhere ends them all, and the reader hears it
  const stream = pipeline(body, guard, counting('download', report, Number.isFinite(length) ? length : undefined), () =>
    settle(),
  );
  const digestOf = (): string => (digest ??= `sha256:${hash.digest('hex')}`);
  return E.right({
    format: src.format ?? 'image',
    stream,
    digest: digestOf,
    verify: () => {
      if (failure !== undefined) return E.left(failure);
      if (!complete) return E.left(unavailable(id, `the download of ${src.url} did not complete`));
      digest = digestOf();
      return want === undefined || digest === want ? E.right(undefined) : E.left(checksumMismatch(id, want, digest));
    },
  });
};

const describe = (err: unknown): string => {
  const cause = (err as { cause?: { message?: unknown } } | undefined)?.cause?.message;
  return typeof cause === 'string' ? cause : err instanceof Error ? err.message : String(err);
};

/**
 * With a guard, the git options that keep an http(s) clone on checked addresses: the host's
 * addresses checked and pinned (`http.curloptResolve`, so git cannot resolve it again) and no
 * redirects. Other transports (file, ssh, paths) are not network fetches of the guard's kind.
 */
const pinnedGit = async (
  id: string,
  repo: string,
  guard: EgressGuard | undefined,
): Promise<E.Either<AnyError, readonly string[]>> => {
  if (guard === undefined || !/^https?:\/\//i.test(repo)) return E.right([]);
  const to = await guard.resolve(repo);
  if (E.isLeft(to)) return E.left(invalidEntry(`${withoutUserinfo(repo)} refused: ${to.left}`, id, ['options.source.repo']));
  const pins = to.right.addresses.map((a) => (a.includes(':') ? `[${a}]` : a)).join(',');
  return E.right([
    '-c',
    'http.followRedirects=false',
    ...(pins === '' ? [] : ['-c', `http.curloptResolve=${to.right.host}:${to.right.port}:${pins}`]),
  ]);
};

/** A git checkout of `src.ref` in a fresh temporary directory (and its commit); `cleanup` removes it. */
export const checkout = async (
  id: string,
  src: Extract<ImageSource, { type: 'git' }>,
  report: (p: Progress) => void,
  signal?: AbortSignal,
  guard?: EgressGuard,
): Promise<E.Either<AnyError, { dir: string; commit: string; cleanup: () => Promise<void> }>> => {
  const pinned = await pinnedGit(id, src.repo, guard);
  if (E.isLeft(pinned)) return pinned;
  const dir = await mkdtemp(join(tmpdir(), 'lessl-git-'));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  const stallS = Math.ceil((src.stallMs ?? GIT_DEFAULTS.stallMs) / 1000);
  // an http(s) transfer slower than a byte a second for stallS seconds fails ("Operation too slow")
  const slow = ['-c', 'http.lowSpeedLimit=1', '-c', `http.lowSpeedTime=${stallS}`];
  const git = (args: string[]): Promise<{ stdout: string }> =>
    promisify(execFile)('git', ['-c', 'protocol.ext.allow=never', ...slow, ...pinned.right, ...args], {
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_ASKPASS: 'true' },
      ...(signal === undefined ? {} : { signal }),
      maxBuffer: 1024 * 1024,
    });
  report({ phase: 'clone', detail: src.repo });
  try {
    await git(['clone', '--quiet', '--no-checkout', '--', src.repo, dir]);
  } catch (err) {
    await cleanup();
    if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
    if (/Operation too slow/.test(String((err as { stderr?: unknown }).stderr ?? '')))
      return E.left(unavailable(id, `git clone of ${src.repo} stalled: less than a byte a second for ${stallS} s`, err));
    return E.left(invalidEntry(`git could not clone ${src.repo}: ${gitError(err)}`, id, ['options.source.repo']));
  }
  try {
    await git(['-C', dir, 'checkout', '--quiet', '--detach', src.ref ?? 'HEAD', '--']);
  } catch (err) {
    await cleanup();
    if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
    return E.left(invalidEntry(`no ref ${src.ref ?? 'HEAD'} in ${src.repo}: ${gitError(err)}`, id, ['options.source.ref']));
  }
  const commit = await git(['-C', dir, 'rev-parse', 'HEAD']).then(
    (r) => `git:${r.stdout.trim()}`,
    () => '',
  );
  return E.right({ dir, commit, cleanup });
};

const gitError = (err: unknown): string => {
  const stderr = (err as { stderr?: unknown }).stderr;
  return (typeof stderr === 'string' && stderr.trim() !== '' ? stderr : describe(err)).trim().split('\n')[0] ?? '';
};

/**
 * The images a Dockerfile builds `FROM` that are not earlier stages or `scratch` (a `FROM` with a
 * variable cannot be known before the build: it is named as is).
 */
export const baseImages = (dockerfile: string): string[] => {
  const stages = new Set<string>();
  const out: string[] = [];
  for (const line of dockerfile.split(/\r?\n/)) {
    const m = /^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (m === null) continue;
    const image = m[1] as string;
    if (image !== 'scratch' && !stages.has(image.toLowerCase())) out.push(image);
    if (m[2] !== undefined) stages.add(m[2].toLowerCase());
  }
  return out;
};

/** The build context of a checkout (without `.git`) and its Dockerfile's text. */
export const buildContext = async (
  id: string,
  dir: string,
  dockerfile: string,
): Promise<E.Either<AnyError, { context: Readable; text: string }>> => {
  if (dockerfile.split('/').includes('..') || dockerfile.startsWith('/'))
    return E.left(
      invalidEntry('options.source.dockerfile must be a path inside the repository', id, ['options.source.dockerfile']),
    );
  const text = await readFile(join(dir, dockerfile), 'utf8').catch(() => undefined);
  if (text === undefined) return E.left(invalidEntry(`no ${dockerfile} in the repository`, id, ['options.source.dockerfile']));
  const context = packDir(dir, { ignore: (name) => name === join(dir, '.git') || name.startsWith(join(dir, '.git/')) });
  return E.right({ context: context as unknown as Readable, text });
};
