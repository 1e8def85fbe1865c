/**
 * A run's ports reached from lessl's own machine, the short way: `lessl-agent --sockets
 * <SandboxKey>` runs here as this process's child, enters the container's network namespace (the
 * file Docker keeps for it), drops to nobody, and for each connect hands this process a TCP
 * socket connected to the port in there (over node's IPC channel: packages/docker/agent/README.md).
 * A connection's bytes then go straight between this process and the daemon; through an exec
 * stream or a warm container's attach stream they go through dockerd and the container's shim,
 * both ways, and through the in-container agent (docs/docker.md#task-ports).
 *
 * It is taken when it can be, else the run's ports go the engine's way (`fallback`): the engine
 * shares this machine's kernel and pid namespace (the container's SandboxKey is the same
 * namespace as `/proc/<its pid>/ns/net` here), this process may read both (root, in practice) and
 * its forwarder may enter (CAP_SYS_ADMIN). A remote engine, a service run in a container or as a
 * user all fall back, as does the backend's `directPorts: false`; a forwarder that could not
 * enter turns the short way off for the backend (`HostPorts`), said once. A connect refused
 * looks again: a container Docker restarted has a new namespace.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { aborted, unavailable } from '@lessl/core';
import type { Host } from '../host.js';
import { AGENT_FILE, agentBinary } from './binary.js';
import type { PortReach } from './forward-exec.js';
import { awaitAnswer, CONNECT_MS, type ConnectError } from './forward.js';
/** The exit code of a host forwarder that could not enter the namespace. */
const CANNOT_ENTER = 125;

/**
 * Where a container's ports are reached from: here (the network namespace file this process can
 * enter), through the engine (see the module comment), or nowhere now (the container is not
 * running, or the engine did not answer: asked again at the next connect).
 */
type PortsFrom = { readonly here: string } | 'engine' | 'not running';

/** Where the ports of `containerId` are reached from now (see `PortsFrom`). */
const portsFrom = async (host: Host, containerId: string): Promise<PortsFrom> => {
  if (process.platform !== 'linux' || agentBinary() === undefined) return 'engine';
  let key: string;
  let pid: number;
  try {
    const c = await host.clients.containers.inspect(containerId);
    if (c.State?.Running !== true) return 'not running';
    [key, pid] = [c.NetworkSettings?.SandboxKey ?? '', c.State.Pid ?? 0];
  } catch {
    return 'not running'; // gone, or the engine did not answer
  }
  if (key === '' || pid <= 0) return 'engine';
  try {
    const [file, proc] = await Promise.all([stat(key), stat(`/proc/${pid}/ns/net`)]);
    return file.ino === proc.ino && file.dev === proc.dev ? { here: key } : 'engine';
  } catch {
    return 'engine'; // another machine's engine, or one in another pid namespace
  }
};

/** A forwarder's answer to a connect: the socket, or why not. */
type Answer = Socket | string;

/** One host forwarder: the child in `netns`, and the sockets it handed over (closed with it). */
class HostForwarder {
  /** Set once the child is gone: true when it could not enter the namespace. */
  failed: boolean | undefined;
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, (a: Answer) => void>();
  private readonly open = new Set<Socket>();
  private next = 1;
  private closed: string | undefined;

  constructor(
    readonly netns: string,
    host: Host,
    private readonly task: string,
  ) {
    this.child = spawn(AGENT_FILE, ['--sockets', netns], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    const { child } = this;
    child.on('message', (m: unknown, handle: unknown) => this.answer(m, handle));
    child.stderr?.on('data', (data: Buffer) =>
      host.logger.warn({ netns, says: data.toString().slice(0, 500) }, 'host port forwarder: stderr'),
    );
    const gone = (code: number | null): void => {
      this.failed ??= code === CANNOT_ENTER;
      this.close('its forwarder ended');
    };
    child.on('exit', gone);
    child.on('error', () => gone(CANNOT_ENTER)); // could not be spawned
    // the forwarder does not keep this process alive by itself: a closed service exits
    child.unref();
    child.channel?.unref();
    (child.stderr as Socket | null)?.unref();
  }

  /** Opens a connection to `port` (see `PortReach.connect`). */
  async connect(port: number, signal: AbortSignal | undefined): Promise<E.Either<ConnectError, Duplex>> {
    const a = await this.ask(port, signal);
    if (a instanceof Socket) return E.right(a);
    if (a === 'aborted') return E.left(aborted(this.task, signal?.reason));
    const why = a === 'timeout' ? 'the forwarder did not answer' : a;
    return E.left(unavailable(this.task, `port ${port} of task ${this.task} cannot be reached: ${why}`));
  }

  /** Ends the forwarder: its channel closes, it exits, every connection it handed over ends. */
  close(why: string): void {
    if (this.closed !== undefined) return;
    this.closed = why;
    for (const p of [...this.pending.values()]) p(why);
    for (const s of [...this.open]) s.destroy();
    if (this.child.connected) this.child.disconnect();
  }

  /** Sends `[id, port]` and waits for the socket or the reason ('timeout', 'aborted' or the forwarder's). */
  private async ask(port: number, signal: AbortSignal | undefined): Promise<Answer> {
    if (this.closed !== undefined || !this.child.connected) return this.closed ?? 'its forwarder ended';
    const id = this.next;
    this.next = (this.next % 0x7fff_fffe) + 1;
    const a = await awaitAnswer<Answer>(
      (answer) => {
        this.pending.set(id, answer);
        this.child.send([id, port], (err) => (err === null ? undefined : answer('its forwarder ended')));
      },
      () => this.pending.delete(id),
      CONNECT_MS,
      signal,
    );
    // a socket that came as the forwarder closed is not handed out
    if (a instanceof Socket && this.closed !== undefined) return (a.destroy(), this.closed);
    return a;
  }

  /** A forwarder's line: `[id]` with the socket, or `[id, "reason"]`. */
  private answer(m: unknown, handle: unknown): void {
    const [id, why] = Array.isArray(m) ? (m as unknown[]) : [];
    const done = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (handle instanceof Socket) {
      if (done === undefined) return void handle.destroy(); // asked no more (aborted, timed out)
      this.open.add(handle);
      handle.once('close', () => this.open.delete(handle));
      return done(handle);
    }
    done?.(typeof why === 'string' && why !== '' ? why : 'refused');
  }
}

/** Whether a backend's runs may still take the short way (a forwarder that could not enter turns it off). */
export class HostPorts {
  usable = true;
}

/** A run's ports from this machine when it can, else `fallback`'s (see the module comment). */
export class HostReach implements PortReach {
  /** The way chosen (undefined: chosen at the next connect; the container did not run). */
  private way: Promise<HostForwarder | PortReach | undefined> | undefined;
  private ended = false;

  constructor(
    private readonly ports: HostPorts,
    private readonly host: Host,
    private readonly containerId: string,
    private readonly task: string,
    private readonly fallback: () => PortReach,
  ) {}

  async connect(port: number, signal: AbortSignal | undefined): Promise<E.Either<ConnectError, Duplex>> {
    if (this.ended) return E.left(this.unavailable(port, 'the task ended'));
    this.way ??= this.choose(undefined);
    const way = await this.way;
    if (way === undefined) {
      this.way = undefined;
      return E.left(this.unavailable(port, 'its container is not running'));
    }
    if (!(way instanceof HostForwarder)) return way.connect(port, signal);
    const c = await way.connect(port, signal);
    if (E.isRight(c) || c.left._tag === 'Aborted' || this.ended) return c;
    // refused, or the forwarder ended: the container may have restarted (a new namespace), or
    // this process may not enter it after all: looked at again, once
    this.way = this.choose(way);
    const again = await this.way;
    if (again === undefined) this.way = undefined;
    return again === undefined || again === way ? c : again.connect(port, signal);
  }

  close(): void {
    this.ended = true;
    void this.way?.then((w) => (w instanceof HostForwarder ? w.close('the task ended') : w?.close()));
  }

  /** The way to the ports now: `before` while it still goes to the container's namespace, else a new one. */
  private async choose(before: HostForwarder | undefined): Promise<HostForwarder | PortReach | undefined> {
    const from = this.ports.usable && before?.failed !== true ? await portsFrom(this.host, this.containerId) : 'engine';
    // looked at again after the wait: the forwarder before may have ended meanwhile
    if (before?.failed === true) return this.fallingBack(before.netns);
    // kept while it runs in the container's namespace still; else closed, and another made
    const same = before !== undefined && before.failed === undefined && typeof from === 'object' && before.netns === from.here;
    if (same) return before;
    before?.close('the container’s network namespace changed');
    if (from === 'engine') return this.fallback();
    return from === 'not running' ? undefined : new HostForwarder(from.here, this.host, this.task);
  }

  /** The engine's way from now on, for every run of the backend (the host forwarder could not enter), said once. */
  private fallingBack(netns: string): PortReach {
    if (!this.ports.usable) return this.fallback();
    this.ports.usable = false;
    this.host.logger.warn(
      { container: this.containerId, netns },
      'host port forwarder: cannot enter a container’s network namespace; task ports go through the engine from now on',
    );
    return this.fallback();
  }

  private unavailable(port: number, why: string): ConnectError {
    return unavailable(this.task, `port ${port} of task ${this.task} cannot be reached: ${why}`);
  }
}
