/** The volumes client: what lessl asks the engine about volumes, typed, one call a method. */
import type Docker from 'dockerode';
import { elementFilter, ownedFilter, type Filters } from '../labels.js';
import { abortOf, bounded, type CallOptions, type CallRunner } from './call.js';
import { mergeFilters } from './filters.js';

/** Volumes on one engine. */
export interface VolumesClient {
  list(filters?: Filters, o?: CallOptions): Promise<Docker.VolumeInspectInfo[]>;
  /** This registry's volumes, narrowed by `filters`. */
  listOwned(filters?: Filters, o?: CallOptions): Promise<Docker.VolumeInspectInfo[]>;
  /** This registry's volumes of one element (its key). */
  listOf(key: string, o?: CallOptions): Promise<Docker.VolumeInspectInfo[]>;
  create(spec: Docker.VolumeCreateOptions, o?: CallOptions): Promise<void>;
  inspect(name: string, o?: CallOptions): Promise<Docker.VolumeInspectInfo>;
  remove(name: string, opts?: { force?: boolean }, o?: CallOptions): Promise<void>;
  /** Removes (forced) this registry's volumes matching `filters`; answers how many went. Never throws. */
  removeOwned(filters?: Filters, o?: CallOptions): Promise<number>;
}

/** The volumes client over a dockerode client; `instance` is the registry whose objects are "owned". */
export const dockerVolumes = (docker: Docker, instance: string, run: CallRunner): VolumesClient => {
  const list = (filters?: Filters, o?: CallOptions): Promise<Docker.VolumeInspectInfo[]> =>
    run(
      bounded('GET /volumes', o, async (s) => {
        const r = await docker.listVolumes({ filters: mergeFilters({}, filters), ...abortOf(s) });
        return r.Volumes ?? [];
      }),
    );
  const self: VolumesClient = {
    list,
    listOwned: (filters, o) => list(mergeFilters(ownedFilter(instance), filters), o),
    listOf: (key, o) => list(elementFilter(instance, key), o),
    create: (spec, o) =>
      run(
        bounded('POST /volumes/create', o, async (s) => {
          await docker.createVolume({ ...spec, ...abortOf(s) });
        }),
      ),
    inspect: (name, o) => run(bounded(`GET /volumes/${name}`, o, (s) => docker.getVolume(name).inspect(abortOf(s)))),
    remove: (name, opts = {}, o) =>
      run(
        bounded(`DELETE /volumes/${name}`, o, async (s) => {
          await docker.getVolume(name).remove({ ...opts, ...abortOf(s) });
        }),
      ),
    removeOwned: async (filters, o) => {
      let n = 0;
      for (const v of await self.listOwned(filters, o).catch(() => []))
        await self.remove(v.Name, { force: true }, o).then(
          () => n++,
          () => undefined,
        );
      return n;
    },
  };
  return self;
};
