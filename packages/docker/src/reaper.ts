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

/**
 * Starts a reaper without waiting for it (open is not delayed by a container start); `failed`
 * hears why it could not start. `stop` waits for the start, then stands it down.
 */
export const startReaperInBackground = (
  host: Host,
  instance: string,
  socketPath: string,
  failed: (e: Unavailable) => void,
): Reaper => {
  const closing = new AbortController();
  const started = startReaper(host, instance, socketPath, REAPER_GRACE_MS, closing.signal).then((r) => {
    if (E.isLeft(r) && !closing.signal.aborted) failed(r.left);
    return E.isLeft(r) ? undefined : r.right;
  });
  return {
    stop: async () => {
      // a start still under way stops at its next step (what it made is removed)
      closing.abort();
      await (await started)?.stop();
    },
  };
};

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

/**
 * Starts a reaper for registry instance `instance` on `host`, whose engine socket is `socketPath`
 * (on the engine's machine). A reaper left by an earlier session of the same instance is removed
 * first (it never removes anything when killed). Answers `Unavailable` saying what failed.
 */
export const startReaper = async (
  host: Host,
  instance: string,
  socketPath: string,
  graceMs = REAPER_GRACE_MS,
  signal?: AbortSignal,
): Promise<E.Either<Unavailable, Reaper>> => {
  const c = host.clients.containers;
  let id: string | undefined;
  let stream: Duplex | undefined;
  const step = <A>(a: A): A => {
    if (signal?.aborted === true) throw new Error('the backend closed while it started');
    return a;
  };
  try {
    for (const old of await c.list(reaperFilter(instance))) await c.remove(old.Id, { force: true }).catch(() => undefined);
    const image = step(await ensureImage(host));
    id = await c.create(containerSpec(image, instance, socketPath, graceMs));
    step(id);
    stream = duplexOf(await c.attach(id, { stream: true, stdin: true, stdout: true, stderr: true, hijack: true }));
    step(stream);
    const ready = waitFor(stream, 'ready\n', READY_MS);
    await c.start(id);
    if (!(await ready)) throw new Error(`it did not say it was ready within ${READY_MS} ms`);
    return E.right(new HeldReaper(host, id, step(stream), instance, socketPath, graceMs));
  } catch (err) {
    // removed before the stream is let go: it never sees its stdin end
    if (id !== undefined) await c.remove(id, { force: true }).catch(() => undefined);
    stream?.destroy();
    return E.left(unavailable('', `the reaper could not start on ${host.name}: ${messageOf(err)}`));
  }
};

/** A reaper whose stream this process holds (see the module comment). */
class HeldReaper implements Reaper {
  private stopping = false;
  private replacement: Reaper | undefined;

  constructor(
    private readonly host: Host,
    readonly containerId: string,
    private readonly stream: Duplex,
    private readonly instance: string,
    private readonly socketPath: string,
    private readonly graceMs: number,
  ) {
    // the held stream never keeps the embedding process alive: its exit is what the reaper waits for
    unref(stream);
    stream.on('data', () => undefined);
    stream.on('error', () => undefined);
    stream.once('close', () => {
      if (!this.stopping) void this.lost();
    });
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    const said = waitFor(this.stream, 'closing\n', 5000);
    this.stream.write('close\n');
    // it exits on its own (and is removed); one that did not say so is removed here
    if (!(await said)) await this.host.clients.containers.remove(this.containerId, { force: true }).catch(() => undefined);
    this.stream.destroy();
    await this.replacement?.stop();
  }

  /**
   * The stream ended while this process lives: the connection was cut (the reaper, still running,
   * waits its grace) or the reaper is gone (killed: not replaced, the next open cleans up as
   * without a reaper). A reaper still running is removed before its grace ends and replaced.
   */
  private async lost(): Promise<void> {
    const c = this.host.clients.containers;
    const log = this.host.logger;
    for (let waited = 0; waited < this.graceMs && !this.stopping; waited += 100) {
      try {
        const st = await c.inspect(this.containerId);
        if (st.State.Running !== true) break;
        await c.remove(this.containerId, { force: true });
        const next = await startReaper(this.host, this.instance, this.socketPath, this.graceMs);
        if (E.isRight(next) && !this.stopping) this.replacement = next.right;
        else if (E.isRight(next)) await next.right.stop();
        else log.warn({ error: next.left.message }, 'reaper: its connection was cut and it could not be replaced');
        return;
      } catch (err) {
        if (statusOf(err) === 404) break;
        await new Promise((r) => setTimeout(r, 100).unref());
      }
    }
    if (!this.stopping) log.warn({ container: this.containerId }, 'reaper: gone while the backend is open; not replaced');
  }
}
