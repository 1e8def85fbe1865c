/**
 * The reaper (docs/docker.md#the-reaper): a small container per backend session that removes the
 * session's Docker objects when the embedding process dies without closing the backend, as
 * testcontainers' Ryuk does. It holds the embedder's attach stream on its stdin (`OpenStdin`,
 * `StdinOnce`): when the embedder's process dies, the engine closes that stdin; the reaper waits
 * a short grace, removes every container, volume, Swarm service and image labelled with the
 * session's registry instance (`lessl.registry`), then exits and is removed (`AutoRemove`). A
 * clean close writes `close` on the stream first: the reaper exits without removing anything.
 *
 * Its image, `lessl/reaper:<node version>`, is made from this machine's own files (the running
 * `node` and the shared libraries `ldd` lists; nothing is downloaded) the first time an engine
 * needs it, by the one Node image builder (`node-image.ts`, which also makes the service's base). The container has no network and the engine's socket mounted: it can do anything the
 * engine can.
 */
import { randomBytes } from 'node:crypto';
import { Duplex, type Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import * as E from 'fp-ts/lib/Either.js';
import { unavailable, type Unavailable } from '@lessl/core';
import type { Host } from './host.js';
import { reaperFilter, reaperImageLabel, reaperLabels } from './labels.js';
import { ensureNodeImage } from './node-image.js';
import { statusOf } from './errors.js';

/** The reaper's image on an engine: the running node's version. */
export const REAPER_IMAGE: { readonly repo: string; readonly tag: string } = { repo: 'lessl/reaper', tag: process.version };
/** How long the reaper waits after its embedder's stream ends before it removes the session's objects. */
export const REAPER_GRACE_MS = 2000;
/** How long open waits for a started reaper to say it is ready. */
const READY_MS = 15_000;

/**
 * The program the reaper runs (`node -e`): argv instance and grace; talks to the engine over the
 * mounted socket; says `ready`, then `closing` (a clean close) or `reaped {...}` on its stdout.
 */
export const REAPER_SCRIPT = `
const http = require('http');
const [instance, graceMs] = process.argv.slice(1);
const call = (method, path) => new Promise((resolve) => {
  const req = http.request({ socketPath: '/var/run/docker.sock', method, path }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => { body += d; });
    res.on('end', () => resolve({ status: res.statusCode, body }));
  });
  req.on('error', (e) => resolve({ status: 0, body: String(e) }));
  req.end();
});
const list = async (path) => {
  const r = await call('GET', path + encodeURIComponent(JSON.stringify({ label: ['lessl.registry=' + instance] })));
  try { const j = JSON.parse(r.body); return Array.isArray(j) ? j : (j && Array.isArray(j.Volumes) ? j.Volumes : []); } catch { return []; }
};
const removeAll = async (path, del, count) => {
  for (const x of await list(path)) if ((await call('DELETE', del(x))).status < 300) count();
};
const reap = async () => {
  const gone = { containers: 0, services: 0, volumes: 0, images: 0 };
  // twice: what a dying create finished late is caught by the second round
  for (let round = 0; round < 2; round++) {
    await removeAll('/services?filters=', (s) => '/services/' + s.ID, () => gone.services++);
    await removeAll('/containers/json?all=1&filters=', (c) => '/containers/' + c.Id + '?force=1&v=1', () => gone.containers++);
    await removeAll('/volumes?filters=', (v) => '/volumes/' + encodeURIComponent(v.Name) + '?force=1', () => gone.volumes++);
    await removeAll('/images/json?all=1&filters=', (i) => '/images/' + i.Id + '?force=1', () => gone.images++);
  }
  process.stdout.write('reaped ' + JSON.stringify(gone) + '\\n');
};
let input = '';
let closing = false;
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  input += d;
  if (input.includes('close\\n')) { closing = true; process.stdout.write('closing\\n'); process.exit(0); }
});
process.stdin.on('end', () => {
  if (!closing) setTimeout(() => reap().then(() => process.exit(0)), Number(graceMs));
});
process.stdout.write('ready\\n');
`;

/** A reaper: how to stand it down. */
export interface Reaper {
  /** Stands the reaper down without removing anything (a clean close); never throws. */
  stop(): Promise<void>;
}

const messageOf = (err: unknown): string => (err instanceof Error ? err.message : String(err));

/** The reaper image on a host: the Node image of this machine's files (`node-image.ts`), made when missing. */
const ensureImage = (host: Host): Promise<string> =>
  ensureNodeImage(host.clients.images, { ...REAPER_IMAGE, labels: reaperImageLabel() });

/** The reaper container's settings: no network, the engine socket, little else. */
const containerSpec = (
  image: string,
  instance: string,
  socketPath: string,
  graceMs: number,
): Parameters<Host['clients']['containers']['create']>[0] => ({
  name: `lessl_reaper_${instance.slice(0, 8)}_${randomBytes(3).toString('hex')}`,
  Image: image,
  Cmd: ['-e', REAPER_SCRIPT, instance, String(graceMs)],
  Labels: reaperLabels(instance),
  User: '0:0',
  OpenStdin: true,
  StdinOnce: true,
  AttachStdin: true,
  AttachStdout: true,
  AttachStderr: true,
  HostConfig: {
    NetworkMode: 'none',
    AutoRemove: true,
    Binds: [`${socketPath}:/var/run/docker.sock`],
    CapDrop: ['ALL'],
    SecurityOpt: ['no-new-privileges'],
    ReadonlyRootfs: true,
    Memory: 64 * 1024 * 1024,
    PidsLimit: 32,
  },
});

/** Resolves once `text` has appeared on the stream (or it ended, or `ms` passed: false). */
const waitFor = (stream: Readable, text: string, ms: number): Promise<boolean> =>
  new Promise((resolve) => {
    let seen = '';
    const done = (ok: boolean): void => {
      clearTimeout(timer);
      stream.off('data', onData).off('end', onEnd).off('close', onEnd).off('error', onEnd);
      resolve(ok);
    };
    const onData = (d: Buffer): void => {
      seen += d.toString('latin1');
      if (seen.includes(text)) done(true);
    };
    const onEnd = (): void => done(false);
    const timer = setTimeout(() => done(false), ms);
    stream.on('data', onData).on('end', onEnd).on('close', onEnd).on('error', onEnd);
  });

/** The attach stream as a node Duplex (dockerode answers the hijacked socket). */
const duplexOf = (s: NodeJS.ReadWriteStream): Duplex => {
  if (s instanceof Duplex) return s;
  throw new Error('the attach answered no stream to hold');
};

/** Lets the process exit while a socket is open (a hijacked stream is a socket). */
const unref = (s: Duplex): void => {
  const f: unknown = Reflect.get(s, 'unref');
  if (typeof f === 'function') Reflect.apply(f, s, []);
};

/** Where a session's reaper runs: its host, registry instance, engine socket (on the engine's machine) and grace. */
interface Site {
  readonly host: Host;
  readonly instance: string;
  readonly socketPath: string;
  readonly graceMs: number;
}

/** The back-off between attempts to start a reaper: the first delay, doubled up to the last. */
const RETRY_MS = { first: 250, last: 10_000 } as const;

/** Resolves after `ms`, or at once when `signal` aborts (the timer never keeps the process alive). */
const sleep = (ms: number, signal: AbortSignal): Promise<void> =>
  delay(ms, undefined, { signal, ref: false }).catch(() => undefined);

/**
 * What a reaper whose stream was lost had become: still running (now removed), gone on its own,
 * or not known (the engine did not answer before the deadline, or the backend closed).
 */
type Loss = 'running' | 'gone' | 'unknown';

/**
 * Removes a reaper container as soon as the engine answers (tried every 100 ms until then, up to
 * `until`, a time, or until `signal` aborts). A reaper whose stdin ended reaps once its grace
 * ends, so this comes first and is one inspect and one remove. Past its grace a reaper has done
 * what it would: one left is removed by the next start (`startOnce` removes the instance's reapers).
 */
const dismiss = async (host: Host, id: string, signal: AbortSignal, until: number): Promise<Loss> => {
  const c = host.clients.containers;
  for (;;) {
    try {
      const running = (await c.inspect(id)).State.Running === true;
      await c.remove(id, { force: true }).catch((err: unknown) => {
        // gone meanwhile (AutoRemove), or its removal already under way
        if (statusOf(err) !== 404 && statusOf(err) !== 409) throw err;
      });
      return running ? 'running' : 'gone';
    } catch (err) {
      if (statusOf(err) === 404) return 'gone';
      if (signal.aborted || Date.now() >= until) return 'unknown';
      await sleep(100, signal);
    }
  }
};

/**
 * One attempt to start a reaper at `site`. A reaper left by an earlier session of the same
 * instance is removed first (it never removes anything when killed). A container this attempt
 * made and cannot hold is removed (its stdin has ended: it would reap once its grace ends).
 * `onLost` hears when the held stream ends while the reaper is not stood down.
 */
const startOnce = async (
  site: Site,
  signal: AbortSignal,
  onLost: (id: string) => void,
): Promise<E.Either<Unavailable, HeldReaper>> => {
  const { host, instance } = site;
  const c = host.clients.containers;
  let id: string | undefined;
  let stream: Duplex | undefined;
  const step = <A>(a: A): A => {
    if (signal.aborted) throw new Error('the backend closed while it started');
    return a;
  };
  try {
    for (const old of await c.list(reaperFilter(instance))) await c.remove(old.Id, { force: true }).catch(() => undefined);
    const image = step(await ensureImage(host));
    id = await c.create(containerSpec(image, instance, site.socketPath, site.graceMs));
    step(id);
    stream = duplexOf(await c.attach(id, { stream: true, stdin: true, stdout: true, stderr: true, hijack: true }));
    step(stream);
    const ready = waitFor(stream, 'ready\n', READY_MS);
    await c.start(id);
    if (!(await ready)) throw new Error(`it did not say it was ready within ${READY_MS} ms (or its stream was cut)`);
    return E.right(new HeldReaper(host, id, step(stream), onLost));
  } catch (err) {
    // removed before the stream is let go where the engine answers; else as soon as it does
    if (id !== undefined) await dismiss(host, id, signal, Date.now() + site.graceMs);
    stream?.destroy();
    return E.left(unavailable('', `the reaper could not start on ${host.name}: ${messageOf(err)}`));
  }
};

/** A reaper whose stream this process holds (see the module comment). */
class HeldReaper {
  private stopping = false;

  constructor(
    private readonly host: Host,
    readonly containerId: string,
    private readonly stream: Duplex,
    onLost: (id: string) => void,
  ) {
    // the held stream never keeps the embedding process alive: its exit is what the reaper waits for
    unref(stream);
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.once('close', () => {
      if (!this.stopping) onLost(containerId);
    });
  }

  /** Stands the reaper down without removing anything (a clean close); never throws. */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const said = waitFor(this.stream, 'closing\n', 5000);
    this.stream.write('close\n');
    // it exits on its own (and is removed); one that did not say so is removed here
    if (!(await said)) await this.host.clients.containers.remove(this.containerId, { force: true }).catch(() => undefined);
    this.stream.destroy();
  }
}

/**
 * A session's reaper, kept while the backend is open. A start that fails is tried again with
 * back-off (`RETRY_MS`) until `stop`. A held stream that ends while this process lives means the
 * connection was cut (the reaper, still running, waits its grace: it is removed as soon as the
 * engine answers and another is started) or the reaper is gone: killed from outside (seen within
 * the grace: not replaced, the next open cleans up as without a reaper) or after an outage longer
 * than the grace (it may have reaped: another is started, and a warning says so).
 */
class KeptReaper implements Reaper {
  private readonly closing = new AbortController();
  private held: HeldReaper | undefined;
  private work: Promise<void> = Promise.resolve();

  constructor(
    private readonly site: Site,
    private readonly failed: (e: Unavailable) => void,
  ) {}

  /** One attempt, awaited (`reaper: true` answers its failure). */
  async first(): Promise<E.Either<Unavailable, KeptReaper>> {
    const r = await startOnce(this.site, this.closing.signal, (id) => this.lost(id));
    if (E.isLeft(r)) return r;
    this.held = r.right;
    return E.right(this);
  }

  /** Starts a reaper in the background, trying again until it runs or `stop`. */
  keep(): void {
    this.work = this.work.then(() => this.startUntilHeld());
  }

  async stop(): Promise<void> {
    // a start under way stops at its next step (what it made is removed); a back-off ends at once
    this.closing.abort();
    await this.work;
    await this.held?.stop();
  }

  private async startUntilHeld(): Promise<void> {
    const signal = this.closing.signal;
    for (let attempt = 1, delay: number = RETRY_MS.first; !signal.aborted; attempt++) {
      const r = await startOnce(this.site, signal, (id) => this.lost(id));
      if (E.isRight(r)) {
        if (signal.aborted) await r.right.stop();
        else this.held = r.right;
        return;
      }
      if (signal.aborted) return;
      if (attempt === 1) this.failed(r.left);
      this.site.host.logger.warn({ error: r.left.message, attempt, retryInMs: delay }, 'reaper: could not start; trying again');
      await sleep(delay, signal);
      delay = Math.min(delay * 2, RETRY_MS.last);
    }
  }

  private lost(id: string): void {
    this.held = undefined;
    const lostAt = Date.now();
    this.work = this.work.then(() => this.recover(id, lostAt));
  }

  private async recover(id: string, lostAt: number): Promise<void> {
    const log = this.site.host.logger;
    const loss = await dismiss(this.site.host, id, this.closing.signal, lostAt + this.site.graceMs);
    if (this.closing.signal.aborted) return;
    const outage = Date.now() - lostAt >= this.site.graceMs;
    if (loss === 'gone' && !outage) {
      log.warn({ container: id }, 'reaper: gone while the backend is open; not replaced');
      return;
    }
    // past the grace, even one still running may have begun to reap
    if (loss !== 'running' || outage)
      log.warn(
        { container: id },
        "reaper: the engine was out of reach longer than the grace; the session's objects may have been reaped",
      );
    await this.startUntilHeld();
  }
}

/**
 * Starts a reaper without waiting for it (open is not delayed by a container start); `failed`
 * hears why the first attempt failed (it is tried again with back-off until `stop`). `stop` waits
 * for a start under way, then stands the reaper down.
 */
export const startReaperInBackground = (
  host: Host,
  instance: string,
  socketPath: string,
  failed: (e: Unavailable) => void,
): Reaper => {
  const kept = new KeptReaper({ host, instance, socketPath, graceMs: REAPER_GRACE_MS }, failed);
  kept.keep();
  return kept;
};

/**
 * Starts a reaper for registry instance `instance` on `host`, whose engine socket is `socketPath`
 * (on the engine's machine), and waits until it runs; answers `Unavailable` saying what failed.
 * Once running it is kept as `startReaperInBackground`'s is.
 */
export const startReaper = async (
  host: Host,
  instance: string,
  socketPath: string,
  graceMs = REAPER_GRACE_MS,
): Promise<E.Either<Unavailable, Reaper>> => {
  const kept = new KeptReaper({ host, instance, socketPath, graceMs }, () => undefined);
  const r = await kept.first();
  if (E.isLeft(r)) await kept.stop();
  return r;
};
