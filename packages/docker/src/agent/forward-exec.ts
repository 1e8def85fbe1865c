/**
 * A run's ports in a container whose main process is not the agent (a cold container, or a task
 * exec'd into a running executor): the agent's binary was put into the container with the run,
 * and the first connect starts ONE exec of `lessl-agent --forward` (attached, stdin open), kept
 * for the run's life and shared by all its connections. The run's end closes its stdin: the
 * forwarder exits, and every connection is destroyed. A forwarder that ended while the run goes on
 * (its container restarted) is started again by the next connect.
 */
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { logError, unavailable } from '@lessl/core';
import type { Host } from '../host.js';
import { Demux } from '../output.js';
import { AGENT_PATH } from './binary.js';
import { Forwarder, type ConnectError } from './forward.js';
import { FrameDecoder } from './frames.js';

/** Reaches a run's ports: connections, and the close at the run's end. */
export interface PortReach {
  /** Opens a connection to `port` (see `Forwarder.connect`). */
  connect(port: number, signal: AbortSignal | undefined): Promise<E.Either<ConnectError, Duplex>>;
  /** The run ended: every connection ends, none opens again. */
  close(): void;
}

/** A run's ports through an exec'd forwarder in `containerId` (see the module comment). */
export class ExecForwarder implements PortReach {
  private started: Promise<E.Either<ConnectError, Forwarder>> | undefined;
  private socket: Duplex | undefined;
  private ended = false;

  constructor(
    private readonly host: Host,
    private readonly containerId: string,
    private readonly task: string,
  ) {}

  async connect(port: number, signal: AbortSignal | undefined): Promise<E.Either<ConnectError, Duplex>> {
    if (this.ended) return E.left(unavailable(this.task, `port ${port} of task ${this.task} cannot be reached: the task ended`));
    this.started ??= this.start();
    const fwd = await this.started;
    if (E.isLeft(fwd)) {
      this.started = undefined; // the next connect tries again
      return E.left({ ...fwd.left, message: `port ${port} of task ${this.task} cannot be reached: ${fwd.left.message}` });
    }
    return fwd.right.connect(port, signal);
  }

  close(): void {
    this.ended = true;
    void this.started?.then((f) => (E.isRight(f) ? f.right.close('the task ended') : undefined));
    this.socket?.end();
  }

  /** Starts the forwarder exec and feeds its frames to a `Forwarder`. */
  private async start(): Promise<E.Either<ConnectError, Forwarder>> {
    const { exec } = this.host.clients;
    try {
      const execId = await exec.create(this.containerId, {
        Cmd: [AGENT_PATH, '--forward'],
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
      });
      const socket = await exec.start(execId, { hijack: true, stdin: true });
      // an engine over TCP: frames go out as they are written (no Nagle delay on a small request);
      // and the stream does not keep the process alive by itself (a service that closed exits
      // while its daemons, reconciled at its next start, keep running)
      if (socket instanceof Socket) socket.setNoDelay(true).unref();
      this.socket = socket;
      const fwd = new Forwarder((frame) => void socket.write(frame), this.task);
      this.feed(socket, fwd);
      if (this.ended) this.close();
      return E.right(fwd);
    } catch (err) {
      return E.left(unavailable(this.task, `the port forwarder could not start in container ${this.containerId}`, err));
    }
  }

  /** The exec's frames to `fwd`, until its stream ends (the forwarder exited, the container stopped). */
  private feed(socket: Duplex, fwd: Forwarder): void {
    const decoder = new FrameDecoder();
    const frames = (data: Uint8Array): void => {
      try {
        for (const f of decoder.push(data)) fwd.dispatch(f);
      } catch (err) {
        this.host.logger.warn({ container: this.containerId, err: logError(err) }, 'port forwarder: not the agent’s protocol');
        socket.destroy();
      }
    };
    const says = (data: Uint8Array): void =>
      this.host.logger.warn(
        { container: this.containerId, says: Buffer.from(data).toString().slice(0, 500) },
        'port forwarder: stderr',
      );
    void new Demux((stream, data) => (stream === 'stdout' ? frames(data) : says(data))).drain(socket).then(() => {
      fwd.close('its forwarder ended (the task or its container stopped)');
      socket.destroy();
      // a container Docker restarts (a restart policy) ends the exec: the next connect starts another
      if (this.socket === socket) [this.started, this.socket] = [undefined, undefined];
    });
  }
}
