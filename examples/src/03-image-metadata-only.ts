/**
 * Workflow 3: a metadata-only image: a child of the base with no data of its own, only ro
 * metadata (labels). Docker: a commit of the parent with label changes. Is it desired? It is how
 * to name and annotate a parent without copying it: the layers are the parent's.
 */
import { unwrap, utf8 } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name } from './common.js';

export const run = async (lessl: DockerBackend) => {
  const base = await ensureBase(lessl);
  const id = `image://local/${name('annotated')}`;
  const el = await unwrap(lessl.stores.image.create({ id, parent: BASE, ro: utf8({ release: '2026.11', channel: 'stable' }) }));
  const info = await lessl.docker.getImage(String(el.attributes.imageId)).inspect();
  await unwrap(lessl.stores.image.delete(id));
  return {
    id,
    parentLayers: base.attributes.layers,
    layers: el.attributes.layers,
    labels: Object.fromEntries(Object.entries(info.Config.Labels ?? {}).filter(([k]) => k.startsWith('lessl.ro.'))),
  };
};

main(import.meta, run);
