/**
 * Images: scratch parent from a tar stream or directory (import), with a parent (helper
 * container from the parent, put the archive, commit), metadata only (commit with label
 * changes), and the sources of sources.ts: image tarball or file (load), registry reference
 * (pull), URL (download, then load or import), git (clone, then build). ro metadata becomes labels.
 */
import { pipeline, type Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack as packDir } from 'tar-fs';
import {
  aborted,
  invalidEntry,
  runtimeError,
  unavailable,
  unsupported,
  type AnyError,
  type CreateError,
  type DeleteError,
  type Element,
  type Progress,
} from '@lessl/core';
import type { DriverCreated, DriverCreateInput, ElementDriver, Intent } from '@lessl/level';
import { followJson, imageLabel, watchStall, withTar, type Engine } from './engine.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { imageRef, LABEL, labelChanges, labelsFor } from './names.js';
import {
  baseImages,
  buildContext,
  checkout,
  counting,
  fromPath,
  fromUrl,
  hashing,
  parseSource,
  recordableSource,
  pullProgress,
  REGISTRY_DEFAULTS,
  reporter,
  type Content,
  type ImageSource,
} from './sources.js';
import { checkedTar } from './tar.js';
import type { EgressGuard } from './egress.js';
import { removeStale, staleOf } from './freshness.js';

const split = (ref: string): { repo: string; tag: string } => {
  const i = ref.lastIndexOf(':');
  return i > ref.lastIndexOf('/') ? { repo: ref.slice(0, i), tag: ref.slice(i + 1) } : { repo: ref, tag: 'latest' };
};

/** The image driver, and fetching an element's source again under another reference (refresh.ts). */
export interface ImageDriver extends ElementDriver {
  /**
   * Makes the image of `input` as `create` does, tagged `ref` instead of the element's own
   * reference (nothing is left under `ref` on failure).
   */
  fetchAs(input: DriverCreateInput, ref: string): Promise<E.Either<CreateError, DriverCreated>>;
}

/** The image driver; URL and git sources go out through `egress` when one is given. */
export const imageDriver = (engine: Engine, egress?: EgressGuard): ImageDriver => {
  const d = engine.docker;

  const describe = async (id: string, ref: string): Promise<E.Either<AnyError, DriverCreated>> => {
    const r = await engine.call(id, () => d.getImage(ref).inspect());
    if (E.isLeft(r)) return r;
    return E.right({ attributes: { ref, imageId: r.right.Id, size: r.right.Size, layers: r.right.RootFS?.Layers?.length ?? 0 } });
  };

  const removeRef = async (ref: string): Promise<void> => {
    const info = await d
      .getImage(ref)
      .inspect()
      .catch(() => undefined);
    // by reference: an image that has other tags too (a loaded archive of an image already here) keeps them
    if (info !== undefined) {
      engine.expected.add(info.Id);
      await engine.removeObject('image', ref);
    }
  };

  const importTar = async (
    id: string,
    ref: string,
    tar: Readable,
    changes: string[],
    signal?: AbortSignal,
  ): Promise<E.Either<AnyError, void>> => {
    const { repo, tag } = split(ref);
    try {
      const r = await withTar(
        tar,
        async (abortSignal) =>
          followJson(await d.importImage(tar as unknown as NodeJS.ReadableStream, { repo, tag, changes, abortSignal } as object)),
        engine.liveness,
      );
      if (r.error !== undefined) return E.left(invalidEntry(`Docker could not import the data: ${r.error}`, id, ['data']));
      return E.right(undefined);
    } catch (err) {
      if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
      if (!isDockerError(err)) throw err;
      if (statusOf(err) === 500)
        return E.left(invalidEntry(`Docker could not import the data: ${(err as Error).message}`, id, ['data']));
      return E.left(fromDocker(id, err));
    }
  };

  /** Loads a `docker save` archive and tags what it loaded as `ref`. */
  const loadArchive = async (
    id: string,
    ref: string,
    archive: Readable,
    signal?: AbortSignal,
  ): Promise<E.Either<AnyError, void>> => {
    try {
      const r = await withTar(
        archive,
        async (abortSignal) => {
          signal?.addEventListener('abort', () => archive.destroy(new Error('aborted')), { once: true });
          return followJson(await d.loadImage(archive as unknown as NodeJS.ReadableStream, { quiet: true, abortSignal }));
        },
        engine.liveness,
      );
      if (r.error !== undefined) return E.left(invalidEntry(`Docker could not load the archive: ${r.error}`, id, ['data']));
      const loaded = r.messages
        .map((m) => (typeof m.stream === 'string' ? m.stream : ''))
        .map((l) => /Loaded image(?: ID)?: (\S+)/.exec(l)?.[1])
        .find((x): x is string => x !== undefined);
      if (loaded === undefined) return E.left(invalidEntry('the archive named no image', id, ['data']));
      const { repo, tag } = split(ref);
      await d.getImage(loaded).tag({ repo, tag });
      return E.right(undefined);
    } catch (err) {
      if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
      if (!isDockerError(err)) throw err;
      return E.left(
        statusOf(err) === 500
          ? invalidEntry(`Docker could not load the archive: ${(err as Error).message}`, id, ['data'])
          : fromDocker(id, err),
      );
    }
  };

  /**
   * Clones a git source and has the engine build it as `ref`, with the labels, no network and
   * no pulls: every image the Dockerfile builds FROM must be on the engine already.
   */
  const build = async (
    id: string,
    ref: string,
    labels: Record<string, string>,
    src: Extract<ImageSource, { type: 'git' }>,
    report: (p: Progress) => void,
    onCommit: (commit: string) => void,
    signal?: AbortSignal,
  ): Promise<E.Either<AnyError, void>> => {
    const co = await checkout(id, src, report, signal, egress);
    if (E.isLeft(co)) return signal?.aborted === true ? E.left(aborted(id, signal.reason)) : co;
    onCommit(co.right.commit);
    try {
      const dockerfile = src.dockerfile ?? 'Dockerfile';
      const ctx = await buildContext(id, co.right.dir, dockerfile);
      if (E.isLeft(ctx)) return ctx;
      for (const base of baseImages(ctx.right.text)) {
        const there =
          base.includes('$') ||
          (await d
            .getImage(base)
            .inspect()
            .then(
              () => true,
              () => false,
            ));
        if (!there)
          return E.left(
            invalidEntry(
              `the Dockerfile builds FROM ${base}, which is not on the engine; lessl never pulls during a build: create or preload it first`,
              id,
              ['options.source'],
            ),
          );
      }
      const s = await d.buildImage(
        ctx.right.context as unknown as NodeJS.ReadableStream,
        {
          t: ref,
          dockerfile,
          labels,
          networkmode: 'none',
          rm: true,
          forcerm: true,
          ...(src.buildArgs === undefined ? {} : { buildargs: src.buildArgs }),
          ...(signal === undefined ? {} : { abortSignal: signal }),
        } as Docker.ImageBuildOptions,
      );
      const r = await followJson(s, (m) => {
        const step = typeof m.stream === 'string' ? /^Step (\d+)\/(\d+) : (.*)/.exec(m.stream) : null;
        if (step !== null) report({ phase: 'build', done: Number(step[1]) - 1, total: Number(step[2]), detail: step[3] ?? '' });
      });
      if (r.error !== undefined) return E.left(invalidEntry(`the build failed: ${r.error}`, id, ['options.source']));
      report({ phase: 'build', detail: 'done' });
      return E.right(undefined);
    } catch (err) {
      if (signal?.aborted === true) return E.left(aborted(id, signal.reason));
      return E.left(fromDocker(id, err));
    } finally {
      await co.right.cleanup();
    }
  };

  const createInner = async (input: DriverCreateInput, ref: string): Promise<E.Either<CreateError, DriverCreated>> => {
    const id = input.id.key;
    const src = parseSource(id, input.options.source);
    if (E.isLeft(src)) return src as E.Either<CreateError, never>;
    if (input.options.freeBytes !== undefined)
      return E.left(
        unsupported(
          id,
          'image free-space requirements',
          'overlay2 image layers have no size of their own; set a memory or tmpfs limit on the executor instead',
        ),
      );
    const labels = labelsFor(engine.instance, input.id, input.ro);
    const source = src.right;
    /** What the element records of its source, so `refresh` can fetch it again and tell unchanged content. */
    let digest: (() => string) | undefined;
    const recorded = recordableSource(source);
    const sourceAttributes = (): Record<string, unknown> => {
      const d = digest?.();
      return recorded === undefined ? {} : { source: recorded, ...(d === undefined || d === '' ? {} : { sourceDigest: d }) };
    };
    const signal = input.signal;
    /** Removes what was made; an aborted request answers Aborted, whatever broke on the way. */
    const fail = async (e: AnyError): Promise<E.Either<CreateError, never>> => {
      await removeRef(ref);
      return E.left((signal?.aborted === true ? aborted(id, signal.reason) : e) as CreateError);
    };
    let extra = (): E.Either<AnyError, void> => E.right(undefined);
    const verified = async (): Promise<E.Either<CreateError, DriverCreated>> => {
      if (signal?.aborted === true) return fail(aborted(id, signal.reason)); // it ended as the abort came
      const v = input.data?.verify();
      if (v !== undefined && E.isLeft(v)) return fail(v.left);
      const x = extra();
      if (E.isLeft(x)) return fail(x.left);
      const out = await describe(id, ref);
      if (E.isLeft(out)) return fail(out.left);
      return E.right({ attributes: { ...out.right.attributes, ...sourceAttributes() } });
    };

    const report = reporter(input.progress);
    /** A Docker failure, or Aborted when the caller's signal ended the request. */
    const failed = (err: unknown): Promise<E.Either<CreateError, never>> =>
      fail(signal?.aborted === true ? aborted(id, signal.reason) : fromDocker(id, err));
    const noInput = (what: string): E.Either<CreateError, never> =>
      E.left(invalidEntry(`${what} takes no data and no parent`, id, ['options.source']));

    if (source?.type === 'registry') {
      if (input.data !== undefined || input.parent !== undefined) return noInput('a registry image');
      let watch: ReturnType<typeof watchStall> | undefined;
      try {
        const s = await d.pull(source.ref, { abortSignal: signal });
        watch = watchStall(s, source.stallMs ?? REGISTRY_DEFAULTS.stallMs);
        const r = await followJson(s, pullProgress(report)).finally(watch.stop);
        if (r.error !== undefined) return fail(runtimeError(id, `pull of ${source.ref} failed: ${r.error}`));
        const { repo, tag } = split(ref);
        await d.getImage(source.ref).tag({ repo, tag });
      } catch (err) {
        if (signal?.aborted !== true && watch?.stalled() === true)
          return fail(
            unavailable(id, `pull of ${source.ref} stalled: nothing for ${source.stallMs ?? REGISTRY_DEFAULTS.stallMs} ms`),
          );
        if (signal?.aborted !== true && (statusOf(err) === 404 || statusOf(err) === 500))
          return fail(runtimeError(id, `pull of ${source.ref} failed: ${(err as Error).message}`, err));
        return failed(err);
      }
      return verified();
    }
    if (source?.type === 'git') {
      if (input.data !== undefined || input.parent !== undefined) return noInput('a git image');
      const built = await build(id, ref, labels, source, report, (c) => (digest = () => c), signal);
      return E.isLeft(built) ? fail(built.left) : verified();
    }

    // file-like content: a docker save archive (loaded) or a root filesystem tar (imported)
    let content: Content | undefined;
    let directory: string | undefined;
    if (source?.type === 'tarball') {
      const data = input.data;
      if (data === undefined) return E.left(invalidEntry('a tarball image needs data (a docker save archive)', id, ['data']));
      const stream = pipeline(checkedTar(id, data.stream, { absoluteSymlinks: true }), counting('load', report), () => undefined);
      content = { format: 'image', stream, verify: () => E.right(undefined), digest: () => '' };
    } else if (source?.type === 'url' || source?.type === 'path' || source?.type === 'directory') {
      if (input.data !== undefined) return E.left(invalidEntry(`a ${source.type} image takes no data`, id, ['data']));
      const got =
        source.type === 'url'
          ? await fromUrl(id, source, report, signal, egress)
          : await fromPath(id, source.path, source.type === 'path' ? source.format : 'rootfs', report);
      if (E.isLeft(got)) return got as E.Either<CreateError, never>;
      if ('directory' in got.right) directory = got.right.directory;
      else {
        content = got.right;
        digest = got.right.digest;
      }
      if (source.type === 'directory' && directory === undefined)
        return E.left(invalidEntry(`not a directory: ${source.path}`, id, ['options.source']));
    }
    // a download that failed (a stall, too many bytes) fails whatever reads it: its own error is the one to answer
    const rest = async (): Promise<E.Either<CreateError, DriverCreated>> => {
      if (content?.format === 'image') {
        if (input.parent !== undefined) return E.left(invalidEntry('an image archive takes no parent', id, ['parent']));
        const r = await loadArchive(id, ref, content.stream, signal);
        const v = content.verify();
        if (E.isLeft(v)) return fail(v.left);
        return E.isLeft(r) ? fail(r.left) : verified();
      }
      let tar: Readable | undefined;
      if (directory !== undefined) {
        const h = hashing();
        digest = h.digest;
        const packed = packDir(directory) as unknown as Readable;
        packed.on('error', (err) => h.stream.destroy(err));
        tar = checkedTar(id, packed.pipe(h.stream), { absoluteSymlinks: true });
      } else if (content !== undefined) tar = checkedTar(id, content.stream, { absoluteSymlinks: true });
      else if (input.data !== undefined) tar = checkedTar(id, input.data.stream, { absoluteSymlinks: true });
      extra = () => content?.verify() ?? E.right(undefined);
      // an abort ends the archive's stream, and with it the import or the put that reads it
      if (tar !== undefined && signal !== undefined) {
        const t = tar;
        const stop = (): void => void t.destroy(new Error('aborted'));
        if (signal.aborted) stop();
        else {
          signal.addEventListener('abort', stop, { once: true });
          t.once('close', () => signal.removeEventListener('abort', stop));
        }
      }

      if (input.parent === undefined) {
        if (tar === undefined) return E.left(invalidEntry('an image needs data, a parent or a source', id, ['data']));
        const r = await importTar(id, ref, tar, labelChanges(labels), signal);
        if (E.isLeft(r)) return fail(r.left);
        return verified();
      }
      // With a parent: helper container from it, put the archive, commit with the labels.
      const parentRef = String(input.parent.attributes.imageId ?? input.parent.attributes.ref ?? '');
      const pinfo = await engine.call(id, () => d.getImage(parentRef).inspect());
      if (E.isLeft(pinfo))
        return E.left(
          pinfo.left._tag === 'NotFound'
            ? runtimeError(id, `the parent's Docker image ${parentRef} is gone`)
            : (pinfo.left as CreateError),
        );
      const hasCmd = (pinfo.right.Config?.Cmd?.length ?? 0) > 0 || (pinfo.right.Config?.Entrypoint?.length ?? 0) > 0;
      let helper: Docker.Container | undefined;
      try {
        helper = await d.createContainer({
          Image: parentRef,
          ...(hasCmd ? {} : { Cmd: ['/lessl-helper-never-started'] }),
          Labels: { [LABEL.helper]: id, [LABEL.registry]: engine.instance },
          HostConfig: { NetworkMode: 'none' },
        });
        if (tar !== undefined) {
          const h = helper;
          const t = tar;
          try {
            await withTar(
              t,
              (abortSignal) => h.putArchive(t as unknown as NodeJS.ReadableStream, { path: '/', abortSignal }),
              engine.liveness,
            );
          } catch (err) {
            if (!isDockerError(err)) throw err;
            return fail(
              statusOf(err) === 400 || statusOf(err) === 500
                ? invalidEntry(`Docker could not unpack the data: ${(err as Error).message}`, id, ['data'])
                : fromDocker(id, err),
            );
          }
        }
        const { repo, tag } = split(ref);
        await helper.commit({ repo, tag, changes: [...labelChanges(labels), ...(hasCmd ? [] : ['CMD []'])] } as never);
      } catch (err) {
        if (!isDockerError(err)) throw err;
        return fail(fromDocker(id, err));
      } finally {
        if (helper !== undefined) await engine.removeQuietly(helper);
      }
      return verified();
    };
    try {
      return await rest();
    } catch (err) {
      const v = content?.verify();
      if (v !== undefined && E.isLeft(v)) return fail(v.left);
      throw err;
    } finally {
      content?.stream.destroy(); // a download nobody read to its end (a refusal before reading) stops here
    }
  };

  /** Any throw (a refused tar entry, a broken source) removes what was made, then propagates. */
  const fetchAs = async (input: DriverCreateInput, ref: string): Promise<E.Either<CreateError, DriverCreated>> => {
    try {
      return await createInner(input, ref);
    } catch (err) {
      await removeRef(ref);
      throw err;
    }
  };

  return {
    external: true,
    supportsData: true,
    create: (input) => fetchAs(input, imageRef(engine.instance, input.id)),
    fetchAs,
    async destroy(el: Element): Promise<E.Either<DeleteError, void>> {
      const ref = String(el.attributes.ref ?? '');
      const imageId = String(el.attributes.imageId ?? '');
      if (imageId !== '') engine.expected.add(imageId);
      // warm containers made from it go first (the pool makes no more of them)
      if (imageId !== '') await engine.pool?.evict(imageId);
      const remove = (): Promise<unknown> => d.getImage(ref).remove({ noprune: false });
      try {
        // a helper of lessl's whose removal failed earlier may still hold the image: it goes first
        await remove().catch(async (err: unknown) => {
          if (statusOf(err) === 404) return;
          if (statusOf(err) === 409 && (await engine.removeOwnHelpers({ ancestor: [imageId] }))) return remove();
          throw err;
        });
        // the content it had before a refresh, kept while containers used it
        await removeStale(engine, staleOf(el), true);
        return E.right(undefined);
      } catch (err) {
        if (statusOf(err) === 404) return E.right(undefined);
        if (statusOf(err) === 409)
          return E.left(fromDocker(el.id.key, err, 'InUse', await engine.users({ ancestor: [imageId] })) as DeleteError);
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async references(el: Element): Promise<E.Either<DeleteError, readonly string[]>> {
      const imageId = String(el.attributes.imageId ?? '');
      try {
        return E.right(await engine.foreignUsers({ ancestor: [imageId] }));
      } catch (err) {
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async recover(intent: Intent): Promise<void> {
      const imgs = await d
        .listImages({ filters: { label: [`${LABEL.id}=${intent.id}`, `${LABEL.registry}=${engine.instance}`] } })
        .catch(() => []);
      engine.recovered.push(...(await engine.removeHelpers(intent.id)));
      for (const i of imgs) {
        engine.recovered.push(`image ${imageLabel(i)}`);
        await engine.removeObject('image', i.Id);
      }
    },
  };
};
