/**
 * The image driver's calls to the engine: describing, tagging and removing an image by
 * reference, importing a root filesystem tar, loading a `docker save` archive and pulling, each
 * answering lessl errors (a stream Docker cannot use is the data's fault: `InvalidEntry`).
 */
import type { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { aborted, invalidEntry, runtimeError, unavailable, type AnyError, type Progress } from '@lessl/core';
import type { Host } from '../host.js';
import { followJson, watchStall, withTar } from '../streams.js';
import { fromDocker, isDockerError, statusOf } from '../errors.js';
import { pullProgress, REGISTRY_DEFAULTS, type ImageSource } from '../sources.js';
import { messageOf } from '../driver-errors.js';

/** A Docker reference split into repository and tag (`latest` when it names none). */
export const splitRef = (ref: string): { repo: string; tag: string } => {
  const i = ref.lastIndexOf(':');
  return i > ref.lastIndexOf('/') ? { repo: ref.slice(0, i), tag: ref.slice(i + 1) } : { repo: ref, tag: 'latest' };
};

/** What an image element records of the Docker image it was made as. */
export type MadeImage = {
  readonly ref: string;
  readonly imageId: string;
  readonly size: number;
  readonly layers: number;
  readonly source?: ImageSource;
  readonly sourceDigest?: string;
};

/** The Docker image under `ref`, as an element records it. */
export const describeImage = async (engine: Host, id: string, ref: string): Promise<E.Either<AnyError, MadeImage>> => {
  const r = await engine.call(id, () => engine.clients.images.inspect(ref));
  if (E.isLeft(r)) return r;
  return E.right({ ref, imageId: r.right.Id, size: r.right.Size, layers: r.right.RootFS?.Layers?.length ?? 0 });
};

/** Tags the image `image` (an ID or a reference) as `ref`. */
export const tagAs = async (engine: Host, image: string, ref: string): Promise<void> => {
  const { repo, tag } = splitRef(ref);
  await engine.clients.images.tag(image, repo, tag);
};

/** True when the engine has an image under this name (an engine that fails answers false). */
export const hasImage = (engine: Host, image: string): Promise<boolean> =>
  engine.clients.images.inspect(image).then(
    () => true,
    () => false,
  );

/** Removes the reference `ref`: an image that has other tags too (an archive of an image already here) keeps them. */
export const removeRef = async (engine: Host, ref: string): Promise<void> => {
  const info = await engine.clients.images.inspect(ref).catch(() => undefined);
  if (info !== undefined) {
    engine.expected.add(info.Id);
    await engine.removeObject('image', ref);
  }
};

/** What an import or a load needs of its create. */
export interface Upload {
  readonly engine: Host;
  readonly id: string;
  readonly ref: string;
  readonly signal?: AbortSignal;
}

/** A failure while Docker reads an upload: Aborted, a status 500 (the data's fault), or Docker's. */
const uploadError = (u: Upload, what: string, err: unknown): AnyError => {
  if (u.signal?.aborted === true) return aborted(u.id, u.signal.reason);
  if (!isDockerError(err)) throw err;
  return statusOf(err) === 500
    ? invalidEntry(`Docker could not ${what}: ${messageOf(err)}`, u.id, ['data'])
    : fromDocker(u.id, err);
};

/** Imports a root filesystem tar as `u.ref`, with Dockerfile `changes` (labels). */
export const importTar = async (u: Upload, tar: Readable, changes: string[]): Promise<E.Either<AnyError, void>> => {
  const { repo, tag } = splitRef(u.ref);
  try {
    const r = await withTar(
      tar,
      async (signal) => followJson(await u.engine.clients.images.import(tar, { repo, tag, changes }, { signal })),
      u.engine.liveness,
    );
    if (r.error !== undefined) return E.left(invalidEntry(`Docker could not import the data: ${r.error}`, u.id, ['data']));
    return E.right(undefined);
  } catch (err) {
    return E.left(uploadError(u, 'import the data', err));
  }
};

/** The image a `docker load` says it loaded. */
const loadedImage = (messages: readonly Record<string, unknown>[]): string | undefined =>
  messages
    .map((m) => (typeof m.stream === 'string' ? m.stream : ''))
    .map((l) => /Loaded image(?: ID)?: (\S+)/.exec(l)?.[1])
    .find((x): x is string => x !== undefined);

/** Loads a `docker save` archive and tags what it loaded as `u.ref`. */
export const loadArchive = async (u: Upload, archive: Readable): Promise<E.Either<AnyError, void>> => {
  try {
    const r = await withTar(
      archive,
      async (signal) => {
        u.signal?.addEventListener('abort', () => archive.destroy(new Error('aborted')), { once: true });
        return followJson(await u.engine.clients.images.load(archive, { signal }));
      },
      u.engine.liveness,
    );
    if (r.error !== undefined) return E.left(invalidEntry(`Docker could not load the archive: ${r.error}`, u.id, ['data']));
    const loaded = loadedImage(r.messages);
    if (loaded === undefined) return E.left(invalidEntry('the archive named no image', u.id, ['data']));
    await tagAs(u.engine, loaded, u.ref);
    return E.right(undefined);
  } catch (err) {
    return E.left(uploadError(u, 'load the archive', err));
  }
};

/**
 * Pulls a registry source and tags it as `u.ref`: a pull silent for its stall bound is
 * Unavailable, a registry's refusal (404, 500) RuntimeError naming the pull.
 */
export const pull = async (
  u: Upload,
  source: Extract<ImageSource, { type: 'registry' }>,
  report: (p: Progress) => void,
): Promise<E.Either<AnyError, void>> => {
  const stallMs = source.stallMs ?? REGISTRY_DEFAULTS.stallMs;
  let watch: ReturnType<typeof watchStall> | undefined;
  try {
    const s = await u.engine.clients.images.pull(source.ref, { signal: u.signal });
    watch = watchStall(s, stallMs);
    const r = await followJson(s, pullProgress(report)).finally(watch.stop);
    if (r.error !== undefined) return E.left(runtimeError(u.id, `pull of ${source.ref} failed: ${r.error}`));
    await tagAs(u.engine, source.ref, u.ref);
    return E.right(undefined);
  } catch (err) {
    const live = u.signal?.aborted !== true;
    if (live && watch?.stalled() === true)
      return E.left(unavailable(u.id, `pull of ${source.ref} stalled: nothing for ${stallMs} ms`));
    if (live && (statusOf(err) === 404 || statusOf(err) === 500))
      return E.left(runtimeError(u.id, `pull of ${source.ref} failed: ${messageOf(err)}`, err));
    return E.left(u.signal?.aborted === true ? aborted(u.id, u.signal.reason) : fromDocker(u.id, err));
  }
};
