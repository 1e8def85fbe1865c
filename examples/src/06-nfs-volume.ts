/**
 * Workflow 6: an nfs volume: the `volume://nfs` store uses Docker's local driver with nfs options
 * (see EXAMPLE_STORES). Docker mounts it when a container starts; this example creates and
 * inspects it only (no NFS server runs here, and nothing is sent off this machine).
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { main, name } from './common.js';

export const run = async (lessl: DockerBackend) => {
  const id = `volume://nfs/${name('shared')}`;
  const el = await unwrap(lessl.stores.volume.create({ id }));
  const info = await lessl.docker.getVolume(String(el.attributes.volumeName)).inspect();
  await unwrap(lessl.stores.volume.delete(id));
  return { id, driver: info.Driver, options: info.Options };
};

main(import.meta, run);
