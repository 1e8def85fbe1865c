/**
 * Images: scratch parent from a tar stream or directory (import), with a parent (helper
 * container from the parent, put the archive, commit), metadata only (commit with label
 * changes), and the sources of sources.ts: image tarball or file (load), registry reference
 * (pull), URL (download, then load or import), git (clone, then build). ro metadata becomes labels.
 * The create's phases are in image/create.ts; this module is the driver around them.
 */
import * as E from 'fp-ts/lib/Either.js';
import type { CreateError, Element } from '@lessl/core';
import type { ElementDriver, DriverCreateInput, Intent } from '@lessl/kit';
import { imageAttributes, imageIdOf } from './attributes.js';
import type { EgressGuard } from './egress.js';
import { imageLabel, type Host } from './host.js';
import { removeStale } from './freshness.js';
import { createImage, type ImageCreated } from './image/create.js';
import { imageUsersFilter } from './labels.js';
import { imageRef } from './names.js';
import { foreignReferences, removeOwned } from './removal.js';

export type { ImageCreated } from './image/create.js';
export type { MadeImage } from './image/engine-io.js';

/** The image driver, and fetching an element's source again under another reference (refresh.ts). */
export interface ImageDriver extends ElementDriver {
  /**
   * Makes the image of `input` as `create` does, tagged `ref` instead of the element's own
   * reference (nothing is left under `ref` on failure).
   */
  fetchAs(input: DriverCreateInput, ref: string): Promise<E.Either<CreateError, ImageCreated>>;
}

/** The image driver; URL and git sources go out through `egress` when one is given. */
export const imageDriver = (engine: Host, egress?: EgressGuard): ImageDriver => {
  const fetchAs = (input: DriverCreateInput, ref: string): Promise<E.Either<CreateError, ImageCreated>> =>
    createImage(engine, input, ref, egress);
  return {
    external: true,
    supportsData: true,
    create: (input) => fetchAs(input, imageRef(engine.instance, input.id)),
    fetchAs,
    /** Warm containers made from it go first (the pool makes no more of them); then the image, and its stale content. */
    async destroy(el: Element) {
      const a = imageAttributes(el);
      const ref = a.ref ?? '';
      const imageId = a.imageId ?? '';
      if (imageId !== '') engine.expected.add(imageId);
      if (imageId !== '') await engine.pool?.evict(imageId);
      return removeOwned(engine, {
        key: el.id.key,
        users: imageUsersFilter(imageId),
        remove: () => engine.clients.images.remove(ref, { noprune: false }),
        // the content it had before a refresh, kept while containers used it
        after: () => removeStale(engine, a.stale, true),
      });
    },
    references: (el: Element) => foreignReferences(engine, el.id.key, imageUsersFilter(imageIdOf(el))),
    async recover(intent: Intent): Promise<void> {
      const imgs = await engine.clients.images.listOf(intent.id).catch(() => []);
      engine.recovered.push(...(await engine.removeHelpers(intent.id)));
      for (const i of imgs) {
        engine.recovered.push(`image ${imageLabel(i)}`);
        await engine.removeObject('image', i.Id);
      }
    },
  };
};
