/**
 * One image create, in named phases: the source decides the way (a pull, a git build, a load of
 * an archive, an import of a root filesystem, or a put onto a parent through a helper container
 * and a commit); every way ends in `verified` (the abort, the data's checksum, the content's own
 * check, then the image as the element records it) or in `fail`, which removes what was made.
 */
import type { Readable } from 'node:stream';
import * as E from 'fp-ts/lib/Either.js';
import { aborted, invalidEntry, runtimeError, unsupported, type AnyError, type CreateError, type Element } from '@lessl/core';
import type { DriverCreateInput } from '@lessl/kit';
import { imageAttributes } from '../attributes.js';
import { createErrorOf, messageOf } from '../driver-errors.js';
import type { EgressGuard } from '../egress.js';
import type { Host } from '../host.js';
import { withTar } from '../streams.js';
import { fromDocker, isDockerError, statusOf } from '../errors.js';
import { helperLabels, labelChanges, labelsFor, notAHelper } from '../labels.js';
import { parseSource, recordableSource, reporter, type Content, type ImageSource, type SourceCall } from '../sources.js';
import { buildFromGit } from './build.js';
import { endOnAbort, materialOf, rootfsTar, type Material } from './content.js';
import { describeImage, importTar, loadArchive, pull, removeRef, splitRef, type MadeImage, type Upload } from './engine-io.js';

/** What a create answers: the image as the element records it. */
export interface ImageCreated {
  readonly attributes: MadeImage;
}

/** A create's answer. */
export type CreateResult = E.Either<CreateError, ImageCreated>;

/** A content check run once the content is consumed. */
type Check = () => E.Either<AnyError, void>;
const noCheck: Check = () => E.right(undefined);

/** One image create of `input` as `ref`. */
class ImageCreate {
  readonly id: string;
  readonly call: SourceCall;
  readonly upload: Upload;
  readonly labels: Record<string, string>;
  /** The digest of what the source gave (bytes or git commit), once known. */
  private digest: (() => string) | undefined;

  constructor(
    readonly engine: Host,
    readonly input: DriverCreateInput,
    readonly ref: string,
    readonly source: ImageSource | undefined,
    egress: EgressGuard | undefined,
  ) {
    this.id = input.id.key;
    const signal = input.signal;
    this.call = { id: this.id, report: reporter(input.progress), signal, egress };
    this.upload = { engine, id: this.id, ref, signal };
    this.labels = labelsFor(engine.instance, input.id, input.ro);
  }

  /** Takes the source's way. */
  run(): Promise<CreateResult> {
    const s = this.source;
    if (s?.type === 'registry') return this.fromRegistry(s);
    if (s?.type === 'git') return this.fromGit(s);
    return this.fromFiles();
  }

  /** Removes what was made; an aborted request answers Aborted, whatever broke on the way. */
  async fail(e: AnyError): Promise<E.Either<CreateError, never>> {
    await removeRef(this.engine, this.ref);
    const signal = this.input.signal;
    return E.left(createErrorOf(signal?.aborted === true ? aborted(this.id, signal.reason) : e));
  }

  /** Checks what was made and describes it, with what the element records of its source. */
  async verified(check: Check = noCheck): Promise<CreateResult> {
    const signal = this.input.signal;
    if (signal?.aborted === true) return this.fail(aborted(this.id, signal.reason)); // it ended as the abort came
    const v = this.input.data?.verify();
    if (v !== undefined && E.isLeft(v)) return this.fail(v.left);
    const x = check();
    if (E.isLeft(x)) return this.fail(x.left);
    const out = await describeImage(this.engine, this.id, this.ref);
    if (E.isLeft(out)) return this.fail(out.left);
    return E.right({ attributes: { ...out.right, ...this.sourceAttributes() } });
  }

  /** What the element records of its source, so `refresh` can fetch it again and tell unchanged content. */
  private sourceAttributes(): Pick<MadeImage, 'source' | 'sourceDigest'> {
    const recorded = recordableSource(this.source);
    const d = this.digest?.();
    return recorded === undefined ? {} : { source: recorded, ...(d === undefined || d === '' ? {} : { sourceDigest: d }) };
  }

  /** Registry and git sources make the whole image: data or a parent are refused. */
  private noInput(what: string): E.Either<CreateError, never> | undefined {
    if (this.input.data === undefined && this.input.parent === undefined) return undefined;
    return E.left(invalidEntry(`${what} takes no data and no parent`, this.id, ['options.source']));
  }

  /** A registry reference, pulled and tagged. */
  private async fromRegistry(s: Extract<ImageSource, { type: 'registry' }>): Promise<CreateResult> {
    const refused = this.noInput('a registry image');
    if (refused !== undefined) return refused;
    const pulled = await pull(this.upload, s, this.call.report);
    return E.isLeft(pulled) ? this.fail(pulled.left) : this.verified();
  }

  /** A git repository, cloned and built (the commit is the digest refresh compares). */
  private async fromGit(s: Extract<ImageSource, { type: 'git' }>): Promise<CreateResult> {
    const refused = this.noInput('a git image');
    if (refused !== undefined) return refused;
    const job = { ...this.call, engine: this.engine, ref: this.ref, labels: this.labels };
    const built = await buildFromGit(job, s, (c) => (this.digest = () => c));
    return E.isLeft(built) ? this.fail(built.left) : this.verified();
  }

  /** Data, a file, a download or a directory; a download that failed fails whatever reads it: its own error is the answer. */
  private async fromFiles(): Promise<CreateResult> {
    const got = await materialOf(this.call, this.input, this.source);
    if (E.isLeft(got)) return E.left(createErrorOf(got.left));
    const content = got.right.content;
    this.digest = content?.digest;
    try {
      return await this.fromMaterial(got.right);
    } catch (err) {
      const v = content?.verify();
      if (v !== undefined && E.isLeft(v)) return this.fail(v.left);
      throw err;
    } finally {
      content?.stream.destroy(); // a download nobody read to its end (a refusal before reading) stops here
    }
  }

  /** An archive is loaded; a root filesystem is imported, or put onto the parent. */
  private async fromMaterial(m: Material): Promise<CreateResult> {
    if (m.content?.format === 'image') return this.loadContent(m.content);
    const rootfs = rootfsTar(this.id, m, this.input);
    if (rootfs.digest !== undefined) this.digest = rootfs.digest;
    const check: Check = () => m.content?.verify() ?? E.right(undefined);
    endOnAbort(rootfs.tar, this.input.signal);
    const parent = this.input.parent;
    if (parent !== undefined) return this.ontoParent(parent, rootfs.tar, check);
    if (rootfs.tar === undefined) return E.left(invalidEntry('an image needs data, a parent or a source', this.id, ['data']));
    const r = await importTar(this.upload, rootfs.tar, labelChanges(this.labels));
    return E.isLeft(r) ? this.fail(r.left) : this.verified(check);
  }

  /** A `docker save` archive, loaded. */
  private async loadContent(content: Content): Promise<CreateResult> {
    if (this.input.parent !== undefined) return E.left(invalidEntry('an image archive takes no parent', this.id, ['parent']));
    const r = await loadArchive(this.upload, content.stream);
    const v = content.verify();
    if (E.isLeft(v)) return this.fail(v.left);
    return E.isLeft(r) ? this.fail(r.left) : this.verified();
  }

  /** With a parent: a helper container from it, the archive put in, and a commit with the labels. */
  private async ontoParent(parent: Element, tar: Readable | undefined, check: Check): Promise<CreateResult> {
    const a = imageAttributes(parent);
    const parentRef = a.imageId ?? a.ref ?? '';
    const pinfo = await this.engine.call(this.id, () => this.engine.clients.images.inspect(parentRef));
    if (E.isLeft(pinfo))
      return E.left(
        pinfo.left._tag === 'NotFound'
          ? runtimeError(this.id, `the parent's Docker image ${parentRef} is gone`)
          : createErrorOf(pinfo.left),
      );
    const cfg = pinfo.right.Config;
    const hasCmd = (cfg?.Cmd?.length ?? 0) > 0 || (cfg?.Entrypoint?.length ?? 0) > 0;
    const containers = this.engine.clients.containers;
    let helper: string | undefined;
    try {
      helper = await containers.create({
        Image: parentRef,
        ...(hasCmd ? {} : { Cmd: ['/lessl-helper-never-started'] }),
        Labels: helperLabels(this.engine.instance, this.id),
        HostConfig: { NetworkMode: 'none' },
      });
      if (tar !== undefined) {
        const put = await this.putInto(helper, tar);
        if (E.isLeft(put)) return this.fail(put.left);
      }
      // the commit keeps the helper's labels: its lessl.helper is blanked, else the image and every
      // container made from it would pass for a helper (swept, or removed to free what it uses)
      const changes = [...labelChanges({ ...this.labels, ...notAHelper() }), ...(hasCmd ? [] : ['CMD []'])];
      await containers.commit(helper, { ...splitRef(this.ref), changes });
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return this.fail(fromDocker(this.id, err));
    } finally {
      if (helper !== undefined) await this.engine.removeQuietly(helper);
    }
    return this.verified(check);
  }

  /** Puts the root filesystem into the helper: an archive Docker cannot unpack is the data's fault. */
  private async putInto(helper: string, tar: Readable): Promise<E.Either<AnyError, void>> {
    const containers = this.engine.clients.containers;
    try {
      await withTar(tar, (signal) => containers.putArchive(helper, tar, '/', { signal }), this.engine.liveness);
      return E.right(undefined);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(
        statusOf(err) === 400 || statusOf(err) === 500
          ? invalidEntry(`Docker could not unpack the data: ${messageOf(err)}`, this.id, ['data'])
          : fromDocker(this.id, err),
      );
    }
  }
}

/**
 * Makes the image of `input` as `ref`: the source and options are checked first (nothing is
 * made when they are refused); any throw (a refused tar entry, a broken source) removes what was
 * made, then propagates.
 */
export const createImage = async (
  engine: Host,
  input: DriverCreateInput,
  ref: string,
  egress: EgressGuard | undefined,
): Promise<CreateResult> => {
  const id = input.id.key;
  try {
    const src = parseSource(id, input.options.source);
    if (E.isLeft(src)) return E.left(createErrorOf(src.left));
    if (input.options.freeBytes !== undefined)
      return E.left(
        unsupported(
          id,
          'image free-space requirements',
          'overlay2 image layers have no size of their own; set a memory or tmpfs limit on the executor instead',
        ),
      );
    return await new ImageCreate(engine, input, ref, src.right, egress).run();
  } catch (err) {
    await removeRef(engine, ref);
    throw err;
  }
};
