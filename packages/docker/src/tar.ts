/**
 * Tar streams checked entry by entry before they reach Docker: entries that escape their
 * destination (`..`, absolute paths, links pointing out) and device nodes are refused, and a
 * malformed archive is refused, each as `InvalidEntry`.
 */
import { posix } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { extract, pack } from 'tar-stream';
import { DataError, invalidEntry } from '@lessl/core';

/** Options of `checkedTar`. */
export interface TarPolicy {
  /** Absolute symlink targets are allowed (a root filesystem resolves them inside the container). */
  readonly absoluteSymlinks: boolean;
}

/** What `refuseEntry` reads of a tar entry's header (lessl's own type: tar-stream's changes between versions). */
export interface TarEntryHeader {
  readonly name: string;
  /** `file`, `directory`, `symlink`, `link`, `block-device`, `character-device`, ... */
  readonly type?: string | null;
  readonly linkname?: string | null;
}

/** Why an entry is refused, or undefined. */
export const refuseEntry = (h: TarEntryHeader, policy: TarPolicy): string | undefined => {
  const name = h.name.replace(/^(\.\/)+/, '');
  if (name.startsWith('/')) return `absolute path ${h.name}`;
  if (name.split('/').includes('..')) return `path escapes the destination: ${h.name}`;
  if (h.type === 'block-device' || h.type === 'character-device') return `device node ${h.name}`;
  if (h.type === 'link') {
    const t = (h.linkname ?? '').replace(/^(\.\/)+/, '');
    if (t.startsWith('/') || posix.normalize(t).startsWith('..')) return `hard link ${h.name} points outside: ${h.linkname}`;
  }
  if (h.type === 'symlink') {
    const t = h.linkname ?? '';
    if (t.startsWith('/')) {
      if (!policy.absoluteSymlinks) return `symlink ${h.name} points outside: ${t}`;
    } else if (posix.normalize(posix.join(posix.dirname(name), t)).startsWith('..'))
      return `symlink ${h.name} points outside: ${t}`;
  }
  return undefined;
};

/**
 * Re-packs `src` entry by entry, refusing what `refuseEntry` refuses. The returned stream errors
 * with a `DataError(InvalidEntry)` for a refused entry or a malformed archive, and with the
 * source's own error when the source fails.
 */
export const checkedTar = (id: string, src: AsyncIterable<Uint8Array>, policy: TarPolicy): Readable => {
  const ex = extract();
  const out = pack();
  const result = new PassThrough();
  const source = Readable.from(src, { objectMode: false });
  let failed = false;
  const fail = (err: unknown): void => {
    if (failed) return;
    failed = true;
    source.destroy();
    ex.destroy();
    out.destroy();
    result.destroy(err instanceof Error ? err : new Error(String(err)));
  };
  ex.on('entry', (header, stream, next) => {
    const why = refuseEntry(header, policy);
    if (why !== undefined) {
      stream.resume();
      fail(new DataError(invalidEntry(`refused tar entry: ${why}`, id, ['data'], { entry: header.name })));
      return;
    }
    const sink = out.entry(header, (err) => (err ? fail(err) : next()));
    // a source that breaks mid-entry fails both ends of the entry: each needs its own error path
    stream.on('error', fail);
    sink.on('error', fail);
    stream.pipe(sink);
  });
  ex.on('finish', () => out.finalize());
  ex.on('error', (err) => fail(new DataError(invalidEntry(`data is not a valid tar archive: ${err.message}`, id, ['data']))));
  out.on('error', fail);
  out.pipe(result);
  result.on('error', () => undefined); // the failure is kept in `result.errored` for whoever sends it
  source.on('error', (err) => fail(err));
  source.pipe(ex);
  return result;
};
