/**
 * What image and volume elements record of their Docker objects (`Element.attributes`), decoded
 * at the one place drivers read them: each field is checked with its io-ts codec, and a field
 * that is missing or of another type reads as absent (never as `unknown`).
 */
import * as t from 'io-ts';
import type { Element } from '@lessl/core';

/** The codec of each recorded image field. */
export const ImageAttributesC = t.partial({
  /** The element's own Docker reference (`lessl/<store>:<name>-<hash>`). */
  ref: t.string,
  /** The Docker image ID the element's content is. */
  imageId: t.string,
  /** Bytes of the image (layers shared with other images counted in each). */
  size: t.number,
  /** How many layers it has. */
  layers: t.number,
  /** The source it was made from, without credentials (decoded where used, by `parseSource`). */
  source: t.unknown,
  /** The sha256 of the source's bytes, or the git commit it was built from. */
  sourceDigest: t.string,
  /** When it last gave a task its root filesystem (ISO time). */
  lastUsed: t.string,
});

/** What an image element records (each field absent when missing or ill-typed). */
export type ImageAttributes = t.TypeOf<typeof ImageAttributesC> & {
  /** Docker images it had before refreshes, still to remove. */
  readonly stale: readonly string[];
};

/** What a volume element records. */
export const VolumeAttributesC = t.partial({
  /** The Docker volume's name. */
  volumeName: t.string,
});
/** What a volume element records. */
export type VolumeAttributes = t.TypeOf<typeof VolumeAttributesC>;

/** The value when its codec accepts it, else undefined. */
const valid = <A>(codec: t.Type<A, unknown, unknown>, u: unknown): A | undefined => (codec.is(u) ? u : undefined);

/** An image element's attributes, decoded field by field. */
export const imageAttributes = (el: Pick<Element, 'attributes'>): ImageAttributes => {
  const a = el.attributes;
  const p = ImageAttributesC.props;
  return {
    ref: valid(p.ref, a.ref),
    imageId: valid(p.imageId, a.imageId),
    size: valid(p.size, a.size),
    layers: valid(p.layers, a.layers),
    source: a.source,
    sourceDigest: valid(p.sourceDigest, a.sourceDigest),
    lastUsed: valid(p.lastUsed, a.lastUsed),
    stale: Array.isArray(a.stale) ? a.stale.filter(t.string.is) : [],
  };
};

/** An image element's Docker image ID, or '' when it records none. */
export const imageIdOf = (el: Pick<Element, 'attributes'>): string => imageAttributes(el).imageId ?? '';

/** An image element's own Docker reference, or '' when it records none. */
export const imageRefOf = (el: Pick<Element, 'attributes'>): string => imageAttributes(el).ref ?? '';

/** A volume element's Docker volume name, or '' when it records none. */
export const volumeNameOf = (el: Pick<Element, 'attributes'>): string =>
  valid(VolumeAttributesC.props.volumeName, el.attributes.volumeName) ?? '';

/** What an executor element records of its Docker objects. */
export const ExecutorAttributesC = t.partial({
  /** The container of its main task (`null` once it is gone). */
  containerId: t.union([t.string, t.null]),
  /** The Swarm service of its main task (Swarm executors). */
  serviceId: t.union([t.string, t.null]),
  /** The host it lives on (several engines). */
  host: t.string,
});

/** An executor element's container ID, or undefined when it records none. */
export const containerIdOf = (el: Pick<Element, 'attributes'>): string | undefined => valid(t.string, el.attributes.containerId);

/** An executor element's Swarm service ID, or undefined when it records none. */
export const serviceIdOf = (el: Pick<Element, 'attributes'>): string | undefined => valid(t.string, el.attributes.serviceId);

/** The host an element lives on (several engines), or undefined when it records none. */
export const hostOf = (el: Pick<Element, 'attributes'>): string | undefined => valid(t.string, el.attributes.host);
