/**
 * The file-like content of an image create: a `docker save` archive (the create's data, a file,
 * a download) to load, or a root filesystem (a tar, a directory) to import or put onto a parent,
 * as one checked tar stream that the caller's abort ends.
 */
import { pipeline, type Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { pack as packDir } from 'tar-fs';
import { invalidEntry, type AnyError } from '@lessl/core';
import type { DriverCreateInput } from '@lessl/kit';
import { counting, fromPath, fromUrl, hashing, type Content, type ImageSource, type SourceCall } from '../sources.js';
import { checkedTar } from '../tar.js';

/** What a file-like source gave: content in one of two formats, or a directory to pack. */
export interface Material {
  readonly content?: Content;
  readonly directory?: string;
}

/** The create's data as a `docker save` archive (a `tarball` source), counted as it is loaded. */
const tarballContent = (call: SourceCall, input: DriverCreateInput): E.Either<AnyError, Material> => {
  const data = input.data;
  if (data === undefined) return E.left(invalidEntry('a tarball image needs data (a docker save archive)', call.id, ['data']));
  const stream = pipeline(
    checkedTar(call.id, data.stream, { absoluteSymlinks: true }),
    counting('load', call.report),
    () => undefined,
  );
  return E.right({ content: { format: 'image', stream, verify: () => E.right(undefined), digest: () => '' } });
};

/** A URL, a file or a directory (these take no data). */
const fetchedContent = async (
  call: SourceCall,
  input: DriverCreateInput,
  source: Extract<ImageSource, { type: 'url' | 'path' | 'directory' }>,
): Promise<E.Either<AnyError, Material>> => {
  if (input.data !== undefined) return E.left(invalidEntry(`a ${source.type} image takes no data`, call.id, ['data']));
  const got =
    source.type === 'url'
      ? await fromUrl(call, source)
      : await fromPath(call.id, source.path, source.type === 'path' ? source.format : 'rootfs', call.report);
  if (E.isLeft(got)) return got;
  if ('directory' in got.right) return E.right({ directory: got.right.directory });
  if (source.type === 'directory') {
    got.right.stream.destroy();
    return E.left(invalidEntry(`not a directory: ${source.path}`, call.id, ['options.source']));
  }
  return E.right({ content: got.right });
};

/** The file-like content of a create (none for data or a parent alone). */
export const materialOf = async (
  call: SourceCall,
  input: DriverCreateInput,
  source: ImageSource | undefined,
): Promise<E.Either<AnyError, Material>> => {
  if (source?.type === 'tarball') return tarballContent(call, input);
  if (source?.type === 'url' || source?.type === 'path' || source?.type === 'directory')
    return fetchedContent(call, input, source);
  return E.right({});
};

/** A root filesystem tar, checked entry by entry, and the digest of what it was made of when that is a directory. */
export interface RootfsTar {
  readonly tar: Readable | undefined;
  readonly digest?: () => string;
}

/** The root filesystem to import or put: a packed directory (hashed), the content, or the create's data. */
export const rootfsTar = (id: string, m: Material, input: DriverCreateInput): RootfsTar => {
  const policy = { absoluteSymlinks: true };
  if (m.directory !== undefined) {
    const h = hashing();
    const packed = packDir(m.directory);
    packed.on('error', (err) => h.stream.destroy(err));
    return { tar: checkedTar(id, packed.pipe(h.stream), policy), digest: h.digest };
  }
  if (m.content !== undefined) return { tar: checkedTar(id, m.content.stream, policy) };
  if (input.data !== undefined) return { tar: checkedTar(id, input.data.stream, policy) };
  return { tar: undefined };
};

/** An abort ends the archive's stream, and with it the import or the put that reads it. */
export const endOnAbort = (tar: Readable | undefined, signal: AbortSignal | undefined): void => {
  if (tar === undefined || signal === undefined) return;
  const stop = (): void => void tar.destroy(new Error('aborted'));
  if (signal.aborted) stop();
  else {
    signal.addEventListener('abort', stop, { once: true });
    tar.once('close', () => signal.removeEventListener('abort', stop));
  }
};
