/** The containers client: what lessl asks the engine about containers, typed, one call a method. */
import type Docker from 'dockerode';
import { elementFilter, helperFilter, ownedFilter, type Filters } from '../labels.js';
import { abortOf, bounded, open, type CallOptions, type CallRunner } from './call.js';
import { mergeFilters } from './filters.js';

/** What a container's settings in a commit change (Dockerfile instructions) and where the image goes. */
export interface CommitOptions {
  readonly repo: string;
  readonly tag: string;
  readonly changes?: readonly string[];
}

/** Containers on one engine. */
export interface ContainersClient {
  /** Every container (stopped ones too) matching `filters`. */
  list(filters?: Filters, o?: CallOptions): Promise<Docker.ContainerInfo[]>;
  /** This registry's containers (stopped ones too), narrowed by `filters`. */
  listOwned(filters?: Filters, o?: CallOptions): Promise<Docker.ContainerInfo[]>;
  /** This registry's containers of one element (its key). */
  listOf(key: string, o?: CallOptions): Promise<Docker.ContainerInfo[]>;
  /** This registry's helper containers made for `owner` (an element key). */
  listHelpersOf(owner: string, o?: CallOptions): Promise<Docker.ContainerInfo[]>;
  /** Creates a container; answers its ID. */
  create(spec: Docker.ContainerCreateOptions, o?: CallOptions): Promise<string>;
  inspect(id: string, o?: CallOptions): Promise<Docker.ContainerInspectInfo>;
  start(id: string, o?: CallOptions): Promise<void>;
  /** Stops with `graceSeconds` before the engine kills. */
  stop(id: string, graceSeconds: number, o?: CallOptions): Promise<void>;
  kill(id: string, signal: string, o?: CallOptions): Promise<void>;
  /** Waits for the container to exit (not bounded: its caller bounds it). */
  wait(id: string, o?: CallOptions): Promise<{ StatusCode: number }>;
  /** Its output: a stream when `follow`, else the bytes so far (multiplexed unless a TTY). */
  logs(id: string, opts: Docker.ContainerLogsOptions, o?: CallOptions): Promise<NodeJS.ReadableStream | Buffer>;
  /** Attaches to its output (before it starts, to miss nothing). */
  attach(id: string, opts: Docker.ContainerAttachOptions, o?: CallOptions): Promise<NodeJS.ReadWriteStream>;
  /** Extracts a tar archive at `path` (an upload: not bounded, its caller checks the engine). */
  putArchive(id: string, tar: NodeJS.ReadableStream | Buffer, path: string, o?: CallOptions): Promise<void>;
  /** A tar archive of `path`. */
  getArchive(id: string, path: string, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Commits its filesystem as an image; answers the image ID. */
  commit(id: string, opts: CommitOptions, o?: CallOptions): Promise<string>;
  /** Removes it (`force` kills it first; `volumes` removes its anonymous volumes). */
  remove(id: string, opts?: { force?: boolean; volumes?: boolean }, o?: CallOptions): Promise<void>;
  /** Removes (forced) this registry's containers matching `filters`; answers how many went. Never throws. */
  removeOwned(filters?: Filters, o?: CallOptions): Promise<number>;
}

const idOf = (r: unknown): string => {
  const id = typeof r === 'object' && r !== null && 'Id' in r ? r.Id : undefined;
  return typeof id === 'string' ? id : '';
};

type Lists = Pick<ContainersClient, 'list' | 'listOwned' | 'listOf' | 'listHelpersOf' | 'removeOwned'>;
type Lifecycle = Pick<ContainersClient, 'create' | 'inspect' | 'start' | 'stop' | 'kill' | 'wait' | 'remove'>;
type Streams = Pick<ContainersClient, 'logs' | 'attach' | 'putArchive' | 'getArchive' | 'commit'>;

/** Making, running and removing containers. */
const lifecycle = (docker: Docker, run: CallRunner): Lifecycle => {
  const c = (id: string): Docker.Container => docker.getContainer(id);
  return {
    create: (spec, o) =>
      run(bounded('POST /containers/create', o, async (s) => (await docker.createContainer({ ...spec, ...abortOf(s) })).id)),
    inspect: (id, o) => run(bounded(`GET /containers/${id}/json`, o, (s) => c(id).inspect(abortOf(s)))),
    start: (id, o) =>
      run(
        bounded(`POST /containers/${id}/start`, o, async (s) => {
          await c(id).start(abortOf(s));
        }),
      ),
    stop: (id, graceSeconds, o) =>
      run(
        bounded(`POST /containers/${id}/stop`, o, async (s) => {
          await c(id).stop({ t: graceSeconds, ...abortOf(s) });
        }),
      ),
    kill: (id, signal, o) =>
      run(
        bounded(`POST /containers/${id}/kill`, o, async (s) => {
          await c(id).kill({ signal, ...abortOf(s) });
        }),
      ),
    wait: (id, o) =>
      run(
        open(`POST /containers/${id}/wait`, o, async (s) => {
          const r: unknown = await c(id).wait(abortOf(s));
          const code = typeof r === 'object' && r !== null && 'StatusCode' in r ? r.StatusCode : undefined;
          return { StatusCode: typeof code === 'number' ? code : -1 };
        }),
      ),
    remove: (id, opts = {}, o) =>
      run(
        bounded(`DELETE /containers/${id}`, o, async (s) => {
          await c(id).remove({ force: opts.force ?? false, v: opts.volumes ?? false, ...abortOf(s) });
        }),
      ),
  };
};

/** Output, archives and commits. */
const streams = (docker: Docker, run: CallRunner): Streams => {
  const c = (id: string): Docker.Container => docker.getContainer(id);
  return {
    logs: (id, opts, o) =>
      run(
        bounded(`GET /containers/${id}/logs`, o, (s): Promise<NodeJS.ReadableStream | Buffer> =>
          opts.follow === true
            ? c(id).logs({ ...opts, follow: true, ...abortOf(s) })
            : c(id).logs({ ...opts, follow: false, ...abortOf(s) }),
        ),
      ),
    attach: (id, opts, o) => run(bounded(`POST /containers/${id}/attach`, o, (s) => c(id).attach({ ...opts, ...abortOf(s) }))),
    putArchive: (id, tar, path, o) =>
      run(
        open(`PUT /containers/${id}/archive`, o, async (s) => {
          await c(id).putArchive(tar, { path, ...abortOf(s) });
        }),
      ),
    getArchive: (id, path, o) =>
      run(bounded(`GET /containers/${id}/archive`, o, (s) => c(id).getArchive({ path, ...abortOf(s) }))),
    commit: (id, opts, o) =>
      run(
        bounded('POST /commit', o, async (s) =>
          idOf(await c(id).commit({ repo: opts.repo, tag: opts.tag, changes: [...(opts.changes ?? [])], ...abortOf(s) })),
        ),
      ),
  };
};

/** Listing this registry's containers (by its labels) and removing them. */
const lists = (docker: Docker, instance: string, run: CallRunner, remove: Lifecycle['remove']): Lists => {
  const list = (filters?: Filters, o?: CallOptions): Promise<Docker.ContainerInfo[]> =>
    run(
      bounded('GET /containers/json', o, (s) =>
        docker.listContainers({ all: true, filters: mergeFilters({}, filters), ...abortOf(s) }),
      ),
    );
  const listOwned = (filters?: Filters, o?: CallOptions): Promise<Docker.ContainerInfo[]> =>
    list(mergeFilters(ownedFilter(instance), filters), o);
  return {
    list,
    listOwned,
    listOf: (key, o) => list(elementFilter(instance, key), o),
    listHelpersOf: (owner, o) => list(helperFilter(instance, owner), o),
    removeOwned: async (filters, o) => {
      let n = 0;
      for (const x of await listOwned(filters, o).catch(() => []))
        await remove(x.Id, { force: true }, o).then(
          () => n++,
          () => undefined,
        );
      return n;
    },
  };
};

/** The containers client over a dockerode client; `instance` is the registry whose objects are "owned". */
export const dockerContainers = (docker: Docker, instance: string, run: CallRunner): ContainersClient => {
  const l = lifecycle(docker, run);
  return { ...l, ...streams(docker, run), ...lists(docker, instance, run, l.remove) };
};
