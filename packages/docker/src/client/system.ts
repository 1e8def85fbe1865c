/** The system client: the engine itself (ping, info, the event stream). */
import type Docker from 'dockerode';
import { abortOf, bounded, open, type CallOptions, type CallRunner } from './call.js';

/** What lessl reads of `docker info`. */
export interface EngineInfo {
  readonly NCPU?: number;
  readonly MemTotal?: number;
  readonly Swarm?: { readonly NodeID?: string; readonly ControlAvailable?: boolean };
}

/** An engine event as lessl reads it. */
export interface EngineEvent {
  readonly Type?: string;
  readonly Action?: string;
  readonly id?: string;
  readonly Actor?: { readonly ID?: string; readonly Attributes?: Readonly<Record<string, string>> };
}

/** The engine itself. */
export interface SystemClient {
  ping(o?: CallOptions): Promise<void>;
  info(o?: CallOptions): Promise<EngineInfo>;
  /** The event stream from `since` (seconds), JSON lines (not bounded: it stays open). */
  events(opts: Docker.GetEventsOptions, o?: CallOptions): Promise<NodeJS.ReadableStream>;
}

const num = (r: object, k: string): number | undefined => {
  const v: unknown = Reflect.get(r, k);
  return typeof v === 'number' ? v : undefined;
};

/** `docker info` narrowed to what lessl reads. */
const engineInfo = (r: unknown): EngineInfo => {
  if (typeof r !== 'object' || r === null) return {};
  const swarm: unknown = Reflect.get(r, 'Swarm');
  const s =
    typeof swarm === 'object' && swarm !== null
      ? {
          ...(typeof Reflect.get(swarm, 'NodeID') === 'string' ? { NodeID: String(Reflect.get(swarm, 'NodeID')) } : {}),
          ...(typeof Reflect.get(swarm, 'ControlAvailable') === 'boolean'
            ? { ControlAvailable: Reflect.get(swarm, 'ControlAvailable') === true }
            : {}),
        }
      : undefined;
  const ncpu = num(r, 'NCPU');
  const mem = num(r, 'MemTotal');
  return {
    ...(ncpu === undefined ? {} : { NCPU: ncpu }),
    ...(mem === undefined ? {} : { MemTotal: mem }),
    ...(s === undefined ? {} : { Swarm: s }),
  };
};

/** A dockerode call that takes options (`ping` and `info` do in dockerode 4; @types/dockerode leaves them out). */
type WithOptions = (options: { abortSignal?: AbortSignal }) => Promise<unknown>;

/** The system client over a dockerode client. */
export const dockerSystem = (docker: Docker, run: CallRunner): SystemClient => {
  const ping: WithOptions = docker.ping.bind(docker);
  const info: WithOptions = docker.info.bind(docker);
  return {
    ping: (o) =>
      run(
        bounded('GET /_ping', o, async (s) => {
          await ping(abortOf(s));
        }),
      ),
    info: (o) => run(bounded('GET /info', o, async (s) => engineInfo(await info(abortOf(s))))),
    events: (opts, o) => run(open('GET /events', o, (s) => docker.getEvents({ ...opts, ...abortOf(s) }))),
  };
};
