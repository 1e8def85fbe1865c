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
import { createHash, type Hash } from 'node:crypto';
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
const positive = (u: unknown): u is number => typeof u === 'number' && Number.isSafeInteger(u) && u > 0;
const Positive = new t.Type<number, number, unknown>(
  'PositiveInteger',
  positive,
  (u, c) => (positive(u) ? t.success(u) : t.failure(u, c, 'a positive integer')),
  (n) => n,
);

const RegistrySourceC = t.intersection([
  t.type({ type: t.literal('registry'), ref: t.string }),
  t.partial({ stallMs: Positive }),
]);
const TarballSourceC = t.type({ type: t.literal('tarball') });
const DirectorySourceC = t.type({ type: t.literal('directory'), path: AbsPath });
const PathSourceC = t.intersection([t.type({ type: t.literal('path'), path: AbsPath }), t.partial({ format: Format })]);
const UrlSourceC = t.intersection([
  t.type({ type: t.literal('url'), url: t.string }),
  t.partial({ format: Format, checksum: t.string, maxBytes: Positive, stallMs: Positive }),
]);
const GitSourceC = t.intersection([
  t.type({ type: t.literal('git'), repo: t.string }),
  t.partial({ ref: t.string, dockerfile: t.string, buildArgs: t.record(t.string, t.string), stallMs: Positive }),
]);
/** Each source's codec by its `type`. */
const SOURCE_CODECS = {
  registry: RegistrySourceC,
  tarball: TarballSourceC,
  directory: DirectorySourceC,
  path: PathSourceC,
  url: UrlSourceC,
  git: GitSourceC,
};
/** A value with a known source `type` (its other fields still to decode). */
const TypedC = t.type({ type: t.keyof(SOURCE_CODECS) });

/** `options.source` of an image create (see the module comment). */
export const ImageSourceC = t.union([RegistrySourceC, TarballSourceC, DirectorySourceC, PathSourceC, UrlSourceC, GitSourceC]);
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
  if (!TypedC.is(u))
    return E.left(
      invalidEntry('options.source.type must be registry, tarball, directory, path, url or git', id, ['options.source.type']),
    );
  const r = decodeExact(SOURCE_CODECS[u.type], id, u, 'options.source', 'options.source');
  if (E.isLeft(r)) return r;
  const s: ImageSource = r.right;
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

/** The byte counts of a pull's layer message. */
const ProgressDetailC = t.partial({ current: t.unknown, total: t.unknown });

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
      const d = ProgressDetailC.is(m.progressDetail) ? m.progressDetail : undefined;
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

/** Who fetches a source: the element's ID, its progress, its abort signal and the egress guard. */
export interface SourceCall {
  readonly id: string;
  readonly report: (p: Progress) => void;
  readonly signal?: AbortSignal | undefined;
  readonly egress?: EgressGuard | undefined;
}

/** A URL image source. */
export type UrlSource = Extract<ImageSource, { type: 'url' }>;

/**
 * One download's bounds and state: the stall timer (re-armed by every chunk), the caller's abort,
 * and why it failed, set where it fails (before the consumer hears of it).
 */
class Download {
  readonly ac = new AbortController();
  failure: AnyError | undefined;
  stalled = false;
  private timer: NodeJS.Timeout | undefined;
  readonly maxBytes: number;
  readonly stallMs: number;

  constructor(
    readonly call: SourceCall,
    readonly src: UrlSource,
  ) {
    this.maxBytes = src.maxBytes ?? URL_DEFAULTS.maxBytes;
    this.stallMs = src.stallMs ?? URL_DEFAULTS.stallMs;
    call.signal?.addEventListener('abort', this.stop, { once: true });
    this.arm();
  }

  /** The caller aborted. */
  readonly stop = (): void => {
    this.failure ??= aborted(this.call.id, this.call.signal?.reason);
    this.ac.abort(this.call.signal?.reason);
  };

  /** The download ended (or failed): no more timer, no more listening to the caller. */
  readonly settle = (): void => {
    clearTimeout(this.timer);
    this.call.signal?.removeEventListener('abort', this.stop);
  };

  /** (Re)starts the stall bound. */
  readonly arm = (): void => {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.stalled = true;
      this.ac.abort();
    }, this.stallMs);
    this.timer.unref();
  };

  /** Phase 1: the request, answered or failed (refused by the guard, no answer, aborted). */
  async request(): Promise<E.Either<AnyError, Response>> {
    const { id } = this.call;
    try {
      return E.right(await guardedFetch(this.src.url, { signal: this.ac.signal, redirect: 'follow' }, this.call.egress));
    } catch (err) {
      this.settle();
      const refused = egressRefusal(err);
      if (refused !== undefined) return E.left(invalidEntry(`${this.src.url} refused: ${refused}`, id, ['options.source.url']));
      const why = this.stalled ? `no answer within ${this.stallMs} ms` : describe(err);
      return E.left(this.failure ?? unavailable(id, `could not download ${this.src.url}: ${why}`, err));
    }
  }

  /** Phase 2: an answer that is an error status, has no body or announces too many bytes is refused. */
  async refusal(res: Response): Promise<AnyError | undefined> {
    const { id } = this.call;
    const url = this.src.url;
    if (!res.ok || res.body === null) {
      this.settle();
      await res.body?.cancel().catch(() => undefined);
      return invalidEntry(`GET ${url} answered ${res.status} ${res.statusText}`, id, ['options.source.url']);
    }
    const length = contentLength(res);
    if (length !== undefined && length > this.maxBytes) {
      this.settle();
      await res.body.cancel().catch(() => undefined);
      return invalidEntry(`${url} is ${length} bytes, more than maxBytes ${this.maxBytes}`, id, ['options.source.url']);
    }
    return undefined;
  }

  /** Phase 3: the body as content, bounded in size and time and hashed on the way. */
  content(body: ReadableStream<Uint8Array>, length: number | undefined): Content {
    const { id } = this.call;
    const url = this.src.url;
    const hash = createHash('sha256');
    let digest: string | undefined;
    let complete = false;
    const guard = this.bounded(hash, () => {
      complete = true;
    });
    const web = Readable.fromWeb(body);
    web.on('error', (err) => {
      this.failure ??= this.stalled
        ? unavailable(id, `${url} stalled: nothing for ${this.stallMs} ms`)
        : unavailable(id, `download of ${url} failed: ${describe(err)}`, err);
    });
    // every stage has an error path: a failure anywhere ends them all, and the reader hears it
    const stream = pipeline(web, guard, counting('download', this.call.report, length), () => this.settle());
    const digestOf = (): string => (digest ??= `sha256:${hash.digest('hex')}`);
    const want = this.src.checksum;
    return {
      format: this.src.format ?? 'image',
      stream,
      digest: digestOf,
      verify: () => {
        if (this.failure !== undefined) return E.left(this.failure);
        if (!complete) return E.left(unavailable(id, `the download of ${url} did not complete`));
        digest = digestOf();
        return want === undefined || digest === want ? E.right(undefined) : E.left(checksumMismatch(id, want, digest));
      },
    };
  }

  /** A pass-through that re-arms the stall bound, refuses more than `maxBytes` and hashes. */
  private bounded(hash: Hash, onComplete: () => void): Transform {
    let bytes = 0;
    const tooMany = (): AnyError =>
      (this.failure ??= invalidEntry(`${this.src.url} sent more than maxBytes ${this.maxBytes}`, this.call.id, [
        'options.source.url',
      ]));
    return new Transform({
      transform: (chunk: Buffer, _enc, done) => {
        this.arm();
        bytes += chunk.length;
        if (bytes > this.maxBytes) {
          done(new Error(tooMany().message));
          return;
        }
        hash.update(chunk);
        done(null, chunk);
      },
      flush: (done) => {
        onComplete();
        this.settle();
        done();
      },
    });
  }
}

/** The length a response announces, if any. */
const contentLength = (res: Response): number | undefined => {
  const n = Number(res.headers.get('content-length') ?? Number.NaN);
  return Number.isFinite(n) ? n : undefined;
};

/**
 * An http(s) download, streamed: refused when it answers an error status, redirects to another
 * scheme, is larger than `maxBytes`, or sends nothing for `stallMs`; hashed on the way when a
 * checksum is given. With `egress`, an address it refuses (at any redirect) is `InvalidEntry`
 * naming it. Aborting `signal` stops it.
 */
export const fromUrl = async (call: SourceCall, src: UrlSource): Promise<E.Either<AnyError, Content>> => {
  const want = src.checksum;
  if (want !== undefined && !/^sha256:[0-9a-f]{64}$/.test(want))
    return E.left(invalidEntry('options.source.checksum must be sha256:<64 hex>', call.id, ['options.source.checksum']));
  if (call.signal?.aborted === true) return E.left(aborted(call.id, call.signal.reason));
  const dl = new Download(call, src);
  const res = await dl.request();
  if (E.isLeft(res)) return res;
  const refused = await dl.refusal(res.right);
  if (refused !== undefined || res.right.body === null) return E.left(refused ?? unavailable(call.id, `${src.url} sent no body`));
  return E.right(dl.content(res.right.body, contentLength(res.right)));
};

/** An error's cause's message (what fetch says of a failed connection), else its own message. */
const CausedC = t.type({ cause: t.type({ message: t.string }) });
const describe = (err: unknown): string =>
  CausedC.is(err) ? err.cause.message : err instanceof Error ? err.message : String(err);

/** What a failed child process wrote to its standard error, if anything. */
const StderrC = t.type({ stderr: t.string });
const stderrOf = (err: unknown): string => (StderrC.is(err) ? err.stderr : '');

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

/** A git source. */
export type GitSource = Extract<ImageSource, { type: 'git' }>;

/** A checkout: its directory, the commit it is at (`git:<sha>`), and how to remove it. */
export interface Checkout {
  readonly dir: string;
  readonly commit: string;
  readonly cleanup: () => Promise<void>;
}

/** Runs git with lessl's fixed options (no ext transport, the stall bound, the pins), never prompting. */
const gitRunner =
  (call: SourceCall, options: readonly string[]) =>
  (args: string[]): Promise<{ stdout: string }> =>
    promisify(execFile)('git', ['-c', 'protocol.ext.allow=never', ...options, ...args], {
      env: { ...process.env, GIT_TERMINAL_PROMPT: '0', GIT_ASKPASS: 'true' },
      ...(call.signal === undefined ? {} : { signal: call.signal }),
      maxBuffer: 1024 * 1024,
    });

/** A git checkout of `src.ref` in a fresh temporary directory (and its commit); `cleanup` removes it. */
export const checkout = async (call: SourceCall, src: GitSource): Promise<E.Either<AnyError, Checkout>> => {
  const { id, signal } = call;
  const pinned = await pinnedGit(id, src.repo, call.egress);
  if (E.isLeft(pinned)) return pinned;
  const dir = await mkdtemp(join(tmpdir(), 'lessl-git-'));
  const cleanup = (): Promise<void> => rm(dir, { recursive: true, force: true });
  const stallS = Math.ceil((src.stallMs ?? GIT_DEFAULTS.stallMs) / 1000);
  // an http(s) transfer slower than a byte a second for stallS seconds fails ("Operation too slow")
  const git = gitRunner(call, ['-c', 'http.lowSpeedLimit=1', '-c', `http.lowSpeedTime=${stallS}`, ...pinned.right]);
  call.report({ phase: 'clone', detail: src.repo });
  try {
    await git(['clone', '--quiet', '--no-checkout', '--', src.repo, dir]);
  } catch (err) {
    await cleanup();
    if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
    if (/Operation too slow/.test(stderrOf(err)))
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
  const stderr = stderrOf(err);
  return (stderr.trim() !== '' ? stderr : describe(err)).trim().split('\n')[0] ?? '';
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
    const image = m[1] ?? '';
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
  return E.right({ context, text });
};
