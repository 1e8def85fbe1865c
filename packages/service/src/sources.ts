/**
 * Image names and image sources on the wire: one definition, used by `POST /v1/images` and by
 * the stack file (stack.ts), which the CLI loads without the rest of the service.
 */
import * as t from 'io-ts';
import { describe, refine, str, strict } from './codec.js';

/** An image name in the service's store (also the rule of function names). */
export const ImageNameC = refine(t.string, (s) => /^[a-z0-9][a-z0-9._-]{0,63}$/.test(s), 'ImageName', {
  type: 'string',
  pattern: '^[a-z0-9][a-z0-9._-]{0,63}$',
});

const FormatC = t.union([t.literal('image'), t.literal('rootfs')]);

/** Where an image comes from: a registry reference, an http(s) archive, a path on the server, a git repository. */
export const ImageSourceC = t.union([
  strict('RegistrySource', { type: t.literal('registry'), ref: str(512, 1) }),
  strict('UrlSource', { type: t.literal('url'), url: str(2048, 1) }, { checksum: str(80, 1), format: FormatC }),
  strict('PathSource', { type: t.literal('path'), path: str(4096, 1) }, { format: FormatC }),
  strict(
    'GitSource',
    {
      type: t.literal('git'),
      repo: describe(str(2048, 1), 'the repository URL (http or https; file:// and paths for admins)'),
    },
    {
      ref: describe(str(256, 1), 'a branch, tag or commit (default HEAD)'),
      dockerfile: describe(str(1024, 1), 'the Dockerfile inside the repository (default Dockerfile)'),
    },
  ),
]);
/** An image source as given on the wire. */
export type ImageSource = t.TypeOf<typeof ImageSourceC>;
