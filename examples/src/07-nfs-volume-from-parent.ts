/**
 * Workflow 7: an nfs volume from a parent, the error case: an nfs store cannot copy a parent's
 * content into a remote export, so it forbids parents: InvalidParent, and nothing is created.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { main, name } from './common.js';

export const run = async (lessl: DockerBackend) => {
  const parent = `volume://local/${name('src')}`;
  await unwrap(lessl.stores.volume.create({ id: parent }));
  const id = `volume://nfs/${name('clone')}`;
  const r = await lessl.stores.volume.create({ id, parent })();
  const after = await lessl.stores.volume.read(id)();
  await unwrap(lessl.stores.volume.delete(parent));
  return { error: r._tag === 'Left' ? { tag: r.left._tag, message: r.left.message } : null, created: after._tag === 'Right' };
};

main(import.meta, run);
