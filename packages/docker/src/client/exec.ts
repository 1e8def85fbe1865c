/** The exec client: processes started in running containers, typed, one call a method. */
import type { Duplex } from 'node:stream';
import type Docker from 'dockerode';
import { abortOf, bounded, type CallOptions, type CallRunner } from './call.js';

/** Execs on one engine. */
export interface ExecClient {
  /** Creates an exec in a running container; answers its ID. */
  create(containerId: string, opts: Docker.ExecCreateOptions, o?: CallOptions): Promise<string>;
  /** Starts it; answers its (hijacked) stream. */
  start(execId: string, opts: Docker.ExecStartOptions, o?: CallOptions): Promise<Duplex>;
  inspect(execId: string, o?: CallOptions): Promise<Docker.ExecInspectInfo>;
}

/** The exec client over a dockerode client. */
export const dockerExec = (docker: Docker, run: CallRunner): ExecClient => ({
  create: (containerId, opts, o) =>
    run(
      bounded(
        `POST /containers/${containerId}/exec`,
        o,
        async (s) => (await docker.getContainer(containerId).exec({ ...opts, ...abortOf(s) })).id,
      ),
    ),
  start: (execId, opts, o) =>
    run(bounded(`POST /exec/${execId}/start`, o, (s) => docker.getExec(execId).start({ ...opts, ...abortOf(s) }))),
  inspect: (execId, o) => run(bounded(`GET /exec/${execId}/json`, o, (s) => docker.getExec(execId).inspect(abortOf(s)))),
});
