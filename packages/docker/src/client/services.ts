/** The services client: Swarm services and their tasks, typed, one call a method. */
import type Docker from 'dockerode';
import { elementFilter, ownedFilter, type Filters } from '../labels.js';
import { abortOf, bounded, type CallOptions, type CallRunner } from './call.js';
import { mergeFilters } from './filters.js';

/** A Swarm task of a service, as far as lessl reads it. */
export interface ServiceTask {
  readonly ID: string;
  readonly NodeID?: string;
  readonly CreatedAt?: string;
  readonly DesiredState?: string;
  readonly Status?: {
    readonly State?: string;
    readonly Err?: string;
    readonly ContainerStatus?: { readonly ContainerID?: string; readonly ExitCode?: number };
  };
}

/** A service as inspected: its version (for updates) and spec. */
export interface ServiceInfo {
  readonly ID: string;
  readonly Version: { readonly Index: number };
  readonly Spec: Docker.ServiceSpec;
}

/** Swarm services on one engine (a manager). */
export interface ServicesClient {
  list(filters?: Filters, o?: CallOptions): Promise<Docker.Service[]>;
  /** This registry's services, narrowed by `filters`. */
  listOwned(filters?: Filters, o?: CallOptions): Promise<Docker.Service[]>;
  /** This registry's services of one element (its key). */
  listOf(key: string, o?: CallOptions): Promise<Docker.Service[]>;
  /** Creates a service; answers its ID. */
  create(spec: Docker.CreateServiceOptions, o?: CallOptions): Promise<string>;
  inspect(id: string, o?: CallOptions): Promise<ServiceInfo>;
  /** Replaces its spec (at `version`, from `inspect`). */
  update(id: string, version: number, spec: Docker.ServiceSpec, o?: CallOptions): Promise<void>;
  remove(id: string, o?: CallOptions): Promise<void>;
  /** Its output (multiplexed). */
  logs(id: string, opts: Docker.ContainerLogsOptions, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Its tasks. */
  tasks(id: string, o?: CallOptions): Promise<ServiceTask[]>;
}

const isTask = (x: unknown): x is ServiceTask => typeof x === 'object' && x !== null && 'ID' in x && typeof x.ID === 'string';

const isInfo = (x: unknown): x is ServiceInfo =>
  typeof x === 'object' &&
  x !== null &&
  'Version' in x &&
  typeof x.Version === 'object' &&
  x.Version !== null &&
  'Index' in x.Version &&
  typeof x.Version.Index === 'number' &&
  'Spec' in x;

/** The services client over a dockerode client; `instance` is the registry whose objects are "owned". */
export const dockerServices = (docker: Docker, instance: string, run: CallRunner): ServicesClient => {
  const svc = (id: string): Docker.Service => docker.getService(id);
  const list = (filters?: Filters, o?: CallOptions): Promise<Docker.Service[]> =>
    run(bounded('GET /services', o, (s) => docker.listServices({ filters: mergeFilters({}, filters), ...abortOf(s) })));
  return {
    list,
    listOwned: (filters, o) => list(mergeFilters(ownedFilter(instance), filters), o),
    listOf: (key, o) => list(elementFilter(instance, key), o),
    create: (spec, o) =>
      run(bounded('POST /services/create', o, async (s) => (await docker.createService({ ...spec, ...abortOf(s) })).id)),
    inspect: (id, o) =>
      run(
        bounded(`GET /services/${id}`, o, async (s) => {
          const r: unknown = await svc(id).inspect(abortOf(s));
          if (!isInfo(r)) throw new Error(`the engine described service ${id} without a version or spec`);
          return r;
        }),
      ),
    update: (id, version, spec, o) =>
      run(
        bounded(`POST /services/${id}/update`, o, async (s) => {
          await svc(id).update({ version, ...spec, ...abortOf(s) });
        }),
      ),
    remove: (id, o) =>
      run(
        bounded(`DELETE /services/${id}`, o, async (s) => {
          await svc(id).remove(abortOf(s));
        }),
      ),
    logs: (id, opts, o) => run(bounded(`GET /services/${id}/logs`, o, (s) => svc(id).logs({ ...opts, ...abortOf(s) }))),
    tasks: (id, o) =>
      run(
        bounded('GET /tasks', o, async (s) => {
          const r: unknown = await docker.listTasks({ filters: { service: [id] }, ...abortOf(s) });
          return Array.isArray(r) ? r.filter(isTask) : [];
        }),
      ),
  };
};
