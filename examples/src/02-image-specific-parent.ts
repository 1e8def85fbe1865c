/**
 * Workflow 2: an image with a specific parent: the busybox base plus a layer holding an app.
 * Docker: a helper container from the parent (never started), the data put with the archive
 * API, then committed; ro metadata becomes labels.
 */
import { pack } from 'tar-stream';
import { unwrap, utf8 } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const layer = pack();
  layer.entry({ name: 'opt/app/hello.sh', mode: 0o755 }, '#!/bin/sh\necho "hello from the child image"\n');
  layer.finalize();
  const id = `image://local/${name('app')}`;
  const child = await unwrap(lessl.stores.image.create({ id, parent: BASE, data: layer, ro: utf8({ app: 'hello' }) }));
  const { task } = await runTask(lessl, { image: id, cmd: ['/opt/app/hello.sh'] });
  const info = await lessl.docker.getImage(String(child.attributes.imageId)).inspect();
  const inUse = await lessl.stores.image.delete(BASE)();
  await unwrap(lessl.stores.image.delete(id));
  return {
    id,
    parent: child.parent?.key,
    output: out(task).trim(),
    label: info.Config.Labels?.['lessl.ro.app'],
    parentDeleteWhileChildExists: inUse._tag === 'Left' ? inUse.left._tag : 'deleted',
  };
};

main(import.meta, run);
