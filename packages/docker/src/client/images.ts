/** The images client: what lessl asks the engine about images, typed, one call a method. */
import type Docker from 'dockerode';
import { elementFilter, ownedFilter, type Filters } from '../labels.js';
import { abortOf, bounded, open, type CallOptions, type CallRunner } from './call.js';
import { mergeFilters } from './filters.js';

/** How an import names the image and what it changes in its configuration. */
export interface ImportOptions {
  readonly repo: string;
  readonly tag: string;
  /** Dockerfile instructions (`LABEL ...`, `CMD []`). */
  readonly changes?: readonly string[];
}

/** Images on one engine. Progress streams are Docker's JSON lines (see `followJson`). */
export interface ImagesClient {
  list(filters?: Filters, o?: CallOptions): Promise<Docker.ImageInfo[]>;
  /** This registry's images, narrowed by `filters`. */
  listOwned(filters?: Filters, o?: CallOptions): Promise<Docker.ImageInfo[]>;
  /** This registry's images of one element (its key). */
  listOf(key: string, o?: CallOptions): Promise<Docker.ImageInfo[]>;
  inspect(ref: string, o?: CallOptions): Promise<Docker.ImageInspectInfo>;
  /** Tags `ref` as `repo:tag`. */
  tag(ref: string, repo: string, tag: string, o?: CallOptions): Promise<void>;
  remove(ref: string, opts?: { force?: boolean; noprune?: boolean }, o?: CallOptions): Promise<void>;
  /** `docker save`: the image as an archive stream. */
  save(ref: string, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** `docker load` of a save archive (an upload: not bounded); answers the progress stream. */
  load(archive: NodeJS.ReadableStream, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Imports a root filesystem tar (an upload: not bounded); answers the progress stream. */
  import(tar: NodeJS.ReadableStream, opts: ImportOptions, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Builds from a context tar (an upload: not bounded); answers the progress stream. */
  build(context: NodeJS.ReadableStream, opts: Docker.ImageBuildOptions, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Pulls a reference; answers the progress stream. */
  pull(ref: string, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Pushes a reference; answers the progress stream. */
  push(ref: string, opts: Docker.ImagePushOptions, o?: CallOptions): Promise<NodeJS.ReadableStream>;
  /** Removes (forced) this registry's images matching `filters`, children before parents; answers how many went. Never throws. */
  removeOwned(filters?: Filters, o?: CallOptions): Promise<number>;
}

/** A readable stream (what dockerode answers for a streamed call). */
const isStream = (x: unknown): x is NodeJS.ReadableStream =>
  typeof x === 'object' && x !== null && 'pipe' in x && typeof x.pipe === 'function' && 'on' in x && typeof x.on === 'function';

/**
 * `docker save` of `names` (`GET /images/get?names=`) through dockerode's `getImages`, which
 * takes an abort signal (`Image.get` takes none) but which @types/dockerode leaves out.
 */
const exportImages = async (
  docker: Docker,
  names: readonly string[],
  signal: AbortSignal | undefined,
): Promise<NodeJS.ReadableStream> => {
  const getImages: unknown = Reflect.get(docker, 'getImages');
  if (typeof getImages !== 'function') throw new Error('this dockerode has no getImages');
  const s: unknown = await Reflect.apply(getImages, docker, [{ names: [...names], ...abortOf(signal) }]);
  if (!isStream(s)) throw new Error('the engine did not answer a stream');
  return s;
};

/** The images client over a dockerode client; `instance` is the registry whose objects are "owned". */
export const dockerImages = (docker: Docker, instance: string, run: CallRunner): ImagesClient => {
  const img = (ref: string): Docker.Image => docker.getImage(ref);
  const list = (filters?: Filters, o?: CallOptions): Promise<Docker.ImageInfo[]> =>
    run(bounded('GET /images/json', o, (s) => docker.listImages({ filters: mergeFilters({}, filters), ...abortOf(s) })));
  const self: ImagesClient = {
    list,
    listOwned: (filters, o) => list(mergeFilters(ownedFilter(instance), filters), o),
    listOf: (key, o) => list(elementFilter(instance, key), o),
    inspect: (ref, o) =>
      run(
        bounded(`GET /images/${ref}/json`, o, (s) => {
          // dockerode hands the options to the request, where the guard's signal marks the call as guarded
          const opts: Docker.ImageInspectOptions & { abortSignal?: AbortSignal } = abortOf(s);
          return img(ref).inspect(opts);
        }),
      ),
    tag: (ref, repo, tag, o) =>
      run(
        bounded(`POST /images/${ref}/tag`, o, async (s) => {
          await img(ref).tag({ repo, tag, ...abortOf(s) });
        }),
      ),
    remove: (ref, opts = {}, o) =>
      run(
        bounded(`DELETE /images/${ref}`, o, async (s) => {
          await img(ref).remove({ ...opts, ...abortOf(s) });
        }),
      ),
    save: (ref, o) => run(bounded(`GET /images/get?names=${ref}`, o, (s) => exportImages(docker, [ref], s))),
    load: (archive, o) => run(open('POST /images/load', o, (s) => docker.loadImage(archive, { quiet: true, ...abortOf(s) }))),
    import: (tar, opts, o) =>
      run(
        open('POST /images/create', o, (s) =>
          docker.importImage(tar, { repo: opts.repo, tag: opts.tag, changes: [...(opts.changes ?? [])], ...abortOf(s) }),
        ),
      ),
    build: (context, opts, o) => run(open('POST /build', o, (s) => docker.buildImage(context, { ...opts, ...abortOf(s) }))),
    pull: (ref, o) => run(bounded('POST /images/create', o, (s) => docker.pull(ref, abortOf(s)))),
    push: (ref, opts, o) => run(bounded(`POST /images/${ref}/push`, o, (s) => img(ref).push({ ...opts, ...abortOf(s) }))),
    removeOwned: async (filters, o) => {
      let n = 0;
      // a parent goes once its children went: a few passes
      for (let pass = 0; pass < 4; pass++) {
        const imgs = await self.listOwned(filters, o).catch(() => []);
        if (imgs.length === 0) break;
        for (const i of imgs)
          await self.remove(i.Id, { force: true }, o).then(
            () => n++,
            () => undefined,
          );
      }
      return n;
    },
  };
  return self;
};
