/**
 * Images: scratch parent from a tar stream or directory (import), with a parent (helper
 * container from the parent, put the archive, commit), metadata only (commit with label
 * changes), image tarball (load), registry reference (pull). ro metadata becomes labels.
 */
import { stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { pack as packDir } from 'tar-fs';
import {
  invalidEntry,
  runtimeError,
  unsupported,
  type AnyError,
  type CreateError,
  type DeleteError,
  type Element,
} from '@lessl/core';
import type { DriverCreated, DriverCreateInput, ElementDriver, Intent } from '@lessl/level';
import { followJson, imageLabel, withTar, type Engine } from './engine.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { imageRef, LABEL, labelChanges, labelsFor } from './names.js';
import { checkedTar } from './tar.js';

/** Where an image comes from (`options.source` of `create`). Without one: `data` (a tar) and/or a `parent`. */
export type ImageSource =
  | { readonly type: 'registry'; readonly ref: string }
  | { readonly type: 'tarball' }
  | { readonly type: 'directory'; readonly path: string };

const parseSource = (id: string, u: unknown): E.Either<AnyError, ImageSource | undefined> => {
  if (u === undefined) return E.right(undefined);
  const s = u as Record<string, unknown>;
  if (typeof u !== 'object' || u === null)
    return E.left(invalidEntry('options.source must be an object', id, ['options.source']));
  if (s.type === 'registry' && typeof s.ref === 'string' && s.ref.length > 0) return E.right({ type: 'registry', ref: s.ref });
  if (s.type === 'tarball') return E.right({ type: 'tarball' });
  if (s.type === 'directory' && typeof s.path === 'string' && s.path.startsWith('/'))
    return E.right({ type: 'directory', path: s.path });
  return E.left(
    invalidEntry(
      'options.source: expected { type: "registry", ref } | { type: "tarball" } | { type: "directory", path: "/abs" }',
      id,
      ['options.source'],
    ),
  );
};

const split = (ref: string): { repo: string; tag: string } => {
  const i = ref.lastIndexOf(':');
  return i > ref.lastIndexOf('/') ? { repo: ref.slice(0, i), tag: ref.slice(i + 1) } : { repo: ref, tag: 'latest' };
};

/** The image driver. */
export const imageDriver = (engine: Engine): ElementDriver => {
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
    if (info !== undefined) await engine.removeObject('image', info.Id);
  };

  const importTar = async (id: string, ref: string, tar: Readable, changes: string[]): Promise<E.Either<AnyError, void>> => {
    const { repo, tag } = split(ref);
    try {
      const r = await withTar(tar, async (abortSignal) =>
        followJson(await d.importImage(tar as unknown as NodeJS.ReadableStream, { repo, tag, changes, abortSignal } as object)),
      );
      if (r.error !== undefined) return E.left(invalidEntry(`Docker could not import the data: ${r.error}`, id, ['data']));
      return E.right(undefined);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      if (statusOf(err) === 500)
        return E.left(invalidEntry(`Docker could not import the data: ${(err as Error).message}`, id, ['data']));
      return E.left(fromDocker(id, err));
    }
  };

  const createInner = async (input: DriverCreateInput): Promise<E.Either<CreateError, DriverCreated>> => {
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
    const ref = imageRef(engine.instance, input.id);
    const labels = labelsFor(engine.instance, input.id, input.ro);
    const source = src.right;
    const fail = async (e: AnyError): Promise<E.Either<CreateError, never>> => {
      await removeRef(ref);
      return E.left(e as CreateError);
    };
    const verified = async (): Promise<E.Either<CreateError, DriverCreated>> => {
      const v = input.data?.verify();
      if (v !== undefined && E.isLeft(v)) return fail(v.left);
      const out = await describe(id, ref);
      return E.isLeft(out) ? fail(out.left) : (out as E.Either<CreateError, DriverCreated>);
    };

    if (source?.type === 'registry') {
      if (input.data !== undefined || input.parent !== undefined)
        return E.left(invalidEntry('a registry image takes no data and no parent', id, ['options.source']));
      try {
        const s = await d.pull(source.ref);
        const r = await followJson(s);
        if (r.error !== undefined) return E.left(runtimeError(id, `pull of ${source.ref} failed: ${r.error}`));
        const { repo, tag } = split(ref);
        await d.getImage(source.ref).tag({ repo, tag });
      } catch (err) {
        return fail(
          statusOf(err) === 404 || statusOf(err) === 500
            ? runtimeError(id, `pull of ${source.ref} failed: ${(err as Error).message}`, err)
            : fromDocker(id, err),
        );
      }
      return verified();
    }
    if (source?.type === 'tarball') {
      if (input.data === undefined)
        return E.left(invalidEntry('a tarball image needs data (a docker save archive)', id, ['data']));
      try {
        const tarball = checkedTar(id, input.data.stream, { absoluteSymlinks: true });
        const r = await withTar(tarball, async (abortSignal) =>
          followJson(await d.loadImage(tarball as unknown as NodeJS.ReadableStream, { quiet: true, abortSignal })),
        );
        if (r.error !== undefined) return E.left(invalidEntry(`Docker could not load the tarball: ${r.error}`, id, ['data']));
        const loaded = r.messages
          .map((m) => (typeof m.stream === 'string' ? m.stream : ''))
          .map((l) => /Loaded image(?: ID)?: (\S+)/.exec(l)?.[1])
          .find((x): x is string => x !== undefined);
        if (loaded === undefined) return E.left(invalidEntry('the tarball named no image', id, ['data']));
        const { repo, tag } = split(ref);
        await d.getImage(loaded).tag({ repo, tag });
      } catch (err) {
        if (!isDockerError(err)) throw err;
        return fail(
          statusOf(err) === 500
            ? invalidEntry(`Docker could not load the tarball: ${(err as Error).message}`, id, ['data'])
            : fromDocker(id, err),
        );
      }
      return verified();
    }
    let tar: Readable | undefined;
    if (source?.type === 'directory') {
      if (input.data !== undefined) return E.left(invalidEntry('a directory image takes no data', id, ['data']));
      const st = await stat(source.path).catch(() => undefined);
      if (st?.isDirectory() !== true) return E.left(invalidEntry(`not a directory: ${source.path}`, id, ['options.source']));
      tar = checkedTar(id, packDir(source.path) as unknown as AsyncIterable<Uint8Array>, { absoluteSymlinks: true });
    } else if (input.data !== undefined) tar = checkedTar(id, input.data.stream, { absoluteSymlinks: true });

    if (input.parent === undefined) {
      if (tar === undefined) return E.left(invalidEntry('an image needs data, a parent or a source', id, ['data']));
      const r = await importTar(id, ref, tar, labelChanges(labels));
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
          await withTar(t, (abortSignal) => h.putArchive(t as unknown as NodeJS.ReadableStream, { path: '/', abortSignal }));
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

  /** Any throw (a refused tar entry, a broken source) removes what was made, then propagates. */
  const create = async (input: DriverCreateInput): Promise<E.Either<CreateError, DriverCreated>> => {
    try {
      return await createInner(input);
    } catch (err) {
      await removeRef(imageRef(engine.instance, input.id));
      throw err;
    }
  };

  return {
    external: true,
    supportsData: true,
    create,
    async destroy(el: Element): Promise<E.Either<DeleteError, void>> {
      const ref = String(el.attributes.ref ?? '');
      const imageId = String(el.attributes.imageId ?? '');
      if (imageId !== '') engine.expected.add(imageId);
      const remove = (): Promise<unknown> => d.getImage(ref).remove({ noprune: false });
      try {
        // a helper of lessl's whose removal failed earlier may still hold the image: it goes first
        await remove().catch(async (err: unknown) => {
          if (statusOf(err) === 409 && (await engine.removeOwnHelpers({ ancestor: [imageId] }))) return remove();
          throw err;
        });
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
