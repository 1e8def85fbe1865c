/**
 * A container whose main process is lessl-agent, and the one channel to it (the container's
 * attach stream, opened before its start): many runs multiplexed on it, each a fork and an exec
 * inside the container with its own env, cwd and user, its stdout and stderr apart, its stdin
 * relayed in a bounded window, its exit code, kills to its process group. No Docker API call per
 * run. Liveness: while runs are in flight the agent is pinged; an agent that stops answering (a
 * paused container) or whose stream ends (it died, the container was killed) breaks the
 * container: every run in flight ends `lost` (`killed` when a kill was asked) and the container is
 * never used again. See packages/docker/agent/README.md and docs/pool.md.
 */
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, logError, runtimeError, type AnyError, type InvalidEntry, type Logger } from '@lessl/core';
import { fromDocker } from '../errors.js';
import { Host } from '../host.js';
import { Demux, readableOf } from '../output.js';
import { AGENT_PATH, agentBinary, agentCapabilities, agentTar } from './binary.js';
import { Forwarder } from './forward.js';
import { encodeFrame, exitOf, FrameDecoder, runPayload, userFields, type Frame } from './frames.js';

/** What an agent container is made of. */
export interface AgentContainerSpec {
  /** The image (ID or reference, present on the engine). */
  readonly image: string;
  /** Its container settings (the agent adds the capabilities it needs and turns the log off). */
  readonly hostConfig: Docker.HostConfig;
  readonly labels: Readonly<Record<string, string>>;
  readonly name?: string;
  /** The container's environment (`KEY=value`), under each run's. */
  readonly env?: readonly string[];
  /** How often a container with runs in flight is pinged; no answer by the next ping breaks it (default 2000). */
  readonly livenessMs?: number;
}

/** How a run ended: `exited` (its code), `not-found` (no such command), `killed` (a kill was asked), `lost` (the agent or its container failed). */
export interface AgentRunEnd {
  readonly exitCode: number | null;
  readonly reason: 'exited' | 'not-found' | 'killed' | 'lost';
}

/** One run: the command, its environment, and where its output goes. */
export interface AgentRunRequest {
  readonly argv: readonly string[];
  /** `KEY=value` entries over the container's environment. */
  readonly env?: readonly string[];
  /** Working directory (default: the image's). */
  readonly cwd?: string;
  /** `user[:group]`, numbers or names from the container's /etc/passwd and /etc/group (default: the image's user). */
  readonly user?: string;
  /** Its stdin, relayed then closed; undefined: closed at once. */
  readonly stdin?: AsyncIterable<Uint8Array>;
  /** Output as it arrives, stdout and stderr apart, each in order. */
  readonly output: (stream: 'stdout' | 'stderr', data: Uint8Array) => void;
  /** Aborted: the run is killed (KILL to its process group). */
  readonly signal?: AbortSignal;
}

/** A run in flight. */
export interface AgentRun {
  /**
   * Resolves true once the agent answered the run (started it, or said why it could not), false
   * when the container broke first (no answer within `livenessMs`: a container paused or dead).
   */
  readonly started: Promise<boolean>;
  /** Resolves once it ended (never rejects). */
  readonly done: Promise<AgentRunEnd>;
  /** Sends a signal to its process group. */
  kill(signal: 'TERM' | 'KILL' | number): void;
  /** TERM, then KILL after `graceMs` if it still runs (or KILL at once); resolves once it ended. */
  stop(signal: 'TERM' | 'KILL', graceMs: number): Promise<AgentRunEnd>;
}

const SIGNALS = { TERM: 15, KILL: 9 } as const;
/** Stdin bytes in flight to one run (sent, not yet written to it): the agent holds at most this much. */
const STDIN_WINDOW = 1 << 20;
const STDIN_CHUNK = 64 * 1024;
/** A run not answered this soon has its container's state checked (the agent answers in about a millisecond). */
const CHECK_MS = 250;

interface Live {
  readonly output: AgentRunRequest['output'];
  readonly end: (e: AgentRunEnd) => void;
  /** Settles `started` (once). */
  answered: ((ok: boolean) => void) | undefined;
  killed: boolean;
  done: boolean;
  sent: number;
  acked: number;
  wake: (() => void) | undefined;
}

/** A running agent container and its channel (see the module comment). */
export class AgentContainer {
  private readonly decoder = new FrameDecoder();
  private readonly runs = new Map<number, Live>();
  private nextRun = 1;
  private nextPing = 1;
  private isBroken = false;
  private heard = true;
  private timer: NodeJS.Timeout | undefined;
  private readonly pongs = new Map<number, () => void>();
  /** An inspect of the container is under way (`checkRunning`). */
  private checking = false;
  /** The channel as a stream (the hijacked socket). */
  private readonly stream: Readable;
  /** Connections to ports inside the container (`ports`), over the same channel. */
  private forwarder: Forwarder | undefined;

  private constructor(
    private readonly host: Host,
    /** The container's ID. */
    readonly id: string,
    private readonly channel: NodeJS.ReadWriteStream,
    /** The image's user, for runs that name none. */
    private readonly defaultUser: string,
    private readonly livenessMs: number,
  ) {
    this.stream = readableOf(channel);
    void new Demux((stream, data) => (stream === 'stdout' ? this.receive(data) : this.agentSays(data)))
      .drain(this.stream)
      .then(() => {
        this.break('its stream ended: the agent or its container is gone');
      });
  }

  /**
   * Creates and starts a container of `spec` with the agent as its main process, and answers it
   * once the agent answers; on failure nothing is left (the container is removed). Outside the
   * package: `startAgentContainer`.
   * @internal
   */
  static async start(host: Host, spec: AgentContainerSpec): Promise<E.Either<AnyError, AgentContainer>> {
    const bin = agentBinary();
    if (bin === undefined)
      return E.left(runtimeError(spec.image, 'the in-container agent was not built (no compiler at build time)'));
    let id: string | undefined;
    let channel: NodeJS.ReadWriteStream | undefined;
    try {
      const user = (await host.clients.images.inspect(spec.image)).Config?.User ?? '';
      id = await host.clients.containers.create(createOptions(spec));
      await host.clients.containers.putArchive(id, agentTar(bin), '/');
      channel = await host.clients.containers.attach(id, {
        stream: true,
        stdin: true,
        stdout: true,
        stderr: true,
        hijack: true,
      });
      await host.clients.containers.start(id);
      const agent = new AgentContainer(host, id, channel, user, spec.livenessMs ?? 2000);
      if (await agent.ping(Math.max(host.callTimeoutMs, 5000))) return E.right(agent);
      await agent.remove();
      return E.left(runtimeError(spec.image, 'the in-container agent did not answer (an image for another architecture?)'));
    } catch (err) {
      if (channel !== undefined) readableOf(channel).destroy();
      if (id !== undefined) await host.removeObject('container', id);
      return E.left(fromDocker(spec.image, err));
    }
  }

  /** True once the agent failed (see the module comment): never run anything in it again. */
  get broken(): boolean {
    return this.isBroken;
  }

  /** Runs in flight. */
  get running(): number {
    return this.runs.size;
  }

  /**
   * Connections to TCP ports inside the container for `task`'s run, over the agent's channel
   * (agent/forward.ts): a new set each call, the previous one closed (a container serves one task).
   * Close it at the run's end; the container breaking closes it too.
   */
  ports(task: string): Forwarder {
    this.forwarder?.close('the container serves another run');
    this.forwarder = new Forwarder((frame) => void this.send(frame), task);
    if (this.isBroken) this.forwarder.close('the agent is gone');
    return this.forwarder;
  }

  /** Starts a run (see `AgentRunRequest`); a field no process can take is `InvalidEntry`. */
  run(req: AgentRunRequest): E.Either<InvalidEntry, AgentRun> {
    const { user, group } = userFields(req.user ?? this.defaultUser);
    const p = runPayload({ user, group, cwd: req.cwd ?? '', argv: req.argv, env: req.env ?? [] });
    if (!p.ok) return E.left(invalidEntry(p.error.message, this.id, [p.error.field]));
    const id = this.nextRun;
    this.nextRun = (this.nextRun % 0xffff_fffe) + 1;
    let end: (e: AgentRunEnd) => void = () => undefined;
    let answered: (ok: boolean) => void = () => undefined;
    const done = new Promise<AgentRunEnd>((r) => (end = r));
    const started = new Promise<boolean>((r) => (answered = r));
    const live: Live = { output: req.output, end, answered, killed: false, done: false, sent: 0, acked: 0, wake: undefined };
    if (this.isBroken) this.finish(id, live, { exitCode: null, reason: 'lost' });
    else {
      this.runs.set(id, live);
      this.watch();
      this.send(encodeFrame('R', id, p.payload));
      this.expectAnswer(live);
      // stdin is read only once the run started: a run that never starts leaves it whole for another
      void started.then((ok) => (ok ? this.pump(id, live, req.stdin) : undefined));
    }
    const kill = (signal: 'TERM' | 'KILL' | number): void => this.signal(id, live, signal);
    const onAbort = (): void => kill('KILL');
    req.signal?.addEventListener('abort', onAbort, { once: true });
    if (req.signal?.aborted === true) onAbort();
    void done.then(() => req.signal?.removeEventListener('abort', onAbort));
    return E.right({ started, done, kill, stop: (signal, graceMs) => this.stop(live, done, kill, signal, graceMs) });
  }

  /**
   * A run the agent does not answer within `livenessMs` breaks the container (paused, or dead and
   * not yet seen); one not answered within `CHECK_MS` has the container inspected (one engine call,
   * off the normal path): paused or stopped, it breaks at once.
   */
  private expectAnswer(live: Live): void {
    const check = setTimeout(
      () => {
        if (live.answered !== undefined) void this.checkRunning();
      },
      Math.min(CHECK_MS, this.livenessMs),
    );
    const bound = setTimeout(() => {
      if (live.answered !== undefined) this.break('no answer to a run (a paused container?)');
    }, this.livenessMs);
    check.unref();
    bound.unref();
    const answered = live.answered;
    live.answered = (ok) => {
      clearTimeout(check);
      clearTimeout(bound);
      answered?.(ok);
    };
  }

  /** Breaks the container if the engine says it is paused or not running (one check at a time). */
  private async checkRunning(): Promise<void> {
    if (this.checking) return;
    this.checking = true;
    const state = await this.host.clients.containers.inspect(this.id).then(
      (i) => (i.State.Paused ? 'paused' : i.State.Running ? undefined : 'not running'),
      () => undefined, // gone or unreachable: the stream's end or the bound says so
    );
    this.checking = false;
    if (state !== undefined) this.break(`the container is ${state}`);
  }

  /** Whether the agent answers a ping within `timeoutMs`. */
  async ping(timeoutMs: number): Promise<boolean> {
    if (this.isBroken) return false;
    const n = this.nextPing++;
    let timer: NodeJS.Timeout | undefined;
    const answered = new Promise<boolean>((resolve) => {
      this.pongs.set(n, () => resolve(true));
      timer = setTimeout(() => resolve(false), timeoutMs);
    });
    this.send(encodeFrame('P', n));
    const ok = await answered;
    clearTimeout(timer);
    this.pongs.delete(n);
    return ok;
  }

  /** Closes the channel (the agent exits, and so does the container); runs in flight end `killed`. */
  close(): void {
    for (const live of this.runs.values()) live.killed = true;
    this.break('removed');
  }

  /**
   * Closes the channel without ending the runs in flight (the backend closes: the agent exits and
   * the container stops; the next open finds the runs `lost`).
   */
  detach(): void {
    this.runs.clear();
    this.break('detached');
  }

  /** Closes the channel and removes the container; gone already is fine. */
  async remove(): Promise<void> {
    this.close();
    await this.host.removeObject('container', this.id);
  }

  /** Marks the container broken: every run in flight ends, the channel closes. */
  private break(why: string): void {
    if (this.isBroken) return;
    this.isBroken = true;
    clearInterval(this.timer);
    if (why !== 'removed' && why !== 'detached')
      this.host.logger.warn({ container: this.id, runs: this.runs.size }, `agent: ${why}`);
    for (const [id, live] of this.runs) this.finish(id, live, { exitCode: null, reason: live.killed ? 'killed' : 'lost' });
    this.forwarder?.close(`the agent is gone (${why})`);
    this.channel.end();
    this.stream.destroy();
  }

  /** Pings while runs are in flight; an agent silent since the last ping breaks the container. */
  private watch(): void {
    if (this.timer !== undefined) return;
    this.heard = true;
    this.timer = setInterval(() => {
      if (this.runs.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      } else if (!this.heard) this.break('no answer to a ping (a paused container?)');
      else {
        this.heard = false;
        this.send(encodeFrame('P', 0));
      }
    }, this.livenessMs);
    this.timer.unref();
  }

  private receive(data: Uint8Array): void {
    let frames: Frame[];
    try {
      frames = this.decoder.push(data);
    } catch (err) {
      this.host.logger.warn({ container: this.id, err: logError(err) }, 'agent: not the agent’s protocol');
      return this.break('garbled stream');
    }
    this.heard = true;
    for (const f of frames) this.dispatch(f);
  }

  private dispatch(f: Frame): void {
    if (f.type === 'P') return this.pongs.get(f.run)?.();
    if (this.forwarder?.dispatch(f) === true) return;
    const live = this.runs.get(f.run);
    if (live === undefined) return;
    if (f.type === 'S' || f.type === 'X') this.answer(live, true);
    if (f.type === 'O' || f.type === 'e') live.output(f.type === 'O' ? 'stdout' : 'stderr', new Uint8Array(f.data));
    else if (f.type === 'A') {
      live.acked += f.data.length >= 4 ? f.data.readUInt32BE(0) : 0;
      live.wake?.();
    } else if (f.type === 'X') {
      const x = exitOf(f.data);
      this.finish(f.run, live, { exitCode: x.code, reason: x.notFound ? 'not-found' : live.killed ? 'killed' : 'exited' });
    }
  }

  private answer(live: Live, ok: boolean): void {
    const answered = live.answered;
    live.answered = undefined;
    answered?.(ok);
  }

  private finish(id: number, live: Live, e: AgentRunEnd): void {
    this.answer(live, false);
    this.runs.delete(id);
    live.done = true;
    live.wake?.();
    live.end(e);
  }

  /** What the agent itself writes to stderr (it should not): logged. */
  private agentSays(data: Uint8Array): void {
    this.host.logger.warn({ container: this.id, says: Buffer.from(data).toString().slice(0, 500) }, 'agent: stderr');
  }

  private send(frame: Buffer): boolean {
    if (this.isBroken) return false;
    return this.channel.write(frame);
  }

  private signal(id: number, live: Live, signal: 'TERM' | 'KILL' | number): void {
    if (live.done) return;
    live.killed = true;
    this.send(encodeFrame('K', id, Buffer.from([typeof signal === 'number' ? signal : SIGNALS[signal]])));
  }

  private async stop(
    live: Live,
    done: Promise<AgentRunEnd>,
    kill: (s: 'TERM' | 'KILL') => void,
    signal: 'TERM' | 'KILL',
    graceMs: number,
  ): Promise<AgentRunEnd> {
    kill(signal);
    if (signal === 'TERM' && !live.done) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([done, new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      kill('KILL');
    }
    return done;
  }

  /** Resolves once the channel takes more (or the run ended). */
  private drained(live: Live): Promise<void> {
    return new Promise((resolve) => {
      const go = (): void => {
        this.stream.off('drain', go);
        resolve();
      };
      this.stream.once('drain', go);
      live.wake = go;
    });
  }

  /** Relays a run's stdin in frames, at most `STDIN_WINDOW` bytes ahead of what the agent took; then its end. */
  private async pump(id: number, live: Live, stdin: AsyncIterable<Uint8Array> | undefined): Promise<void> {
    try {
      if (stdin !== undefined)
        for await (const chunk of stdin) {
          for (let off = 0; off < chunk.length && !live.done; off += STDIN_CHUNK) {
            while (!live.done && live.sent - live.acked >= STDIN_WINDOW) await new Promise<void>((r) => (live.wake = r));
            const part = chunk.subarray(off, off + STDIN_CHUNK);
            live.sent += part.length;
            if (!this.send(encodeFrame('I', id, part)) && !live.done) await this.drained(live);
          }
          if (live.done) break;
        }
    } catch (err) {
      this.host.logger.warn({ container: this.id, err: logError(err) }, 'agent: a run’s stdin failed; it ends there');
    }
    if (!live.done) this.send(encodeFrame('E', id));
  }
}

/** The container's settings: the agent as main process (as root, the image's user kept for runs), stdin open, no log. */
const createOptions = (spec: AgentContainerSpec): Docker.ContainerCreateOptions => {
  const caps = agentCapabilities(spec.hostConfig);
  return {
    ...(spec.name === undefined ? {} : { name: spec.name }),
    Image: spec.image,
    Entrypoint: [],
    Cmd: [AGENT_PATH, ...caps.drop.map(String)],
    User: '0',
    Env: [...(spec.env ?? [])],
    Labels: { ...spec.labels },
    Tty: false,
    OpenStdin: true,
    StdinOnce: false,
    AttachStdin: true,
    AttachStdout: true,
    AttachStderr: true,
    HostConfig: { ...spec.hostConfig, CapAdd: caps.capAdd, CapDrop: caps.capDrop, LogConfig: { Type: 'none', Config: {} } },
  };
};

/**
 * Starts an agent container on the engine `docker` talks to (see `AgentContainer.start`), for a
 * caller outside a backend (benchmarks, tools): the container carries `spec.labels` only, so the
 * caller removes it (`remove()`).
 */
export const startAgentContainer = (
  docker: Docker,
  spec: AgentContainerSpec,
  logger?: Logger,
): Promise<E.Either<AnyError, AgentContainer>> => AgentContainer.start(new Host(docker, 'agent', undefined, logger), spec);
