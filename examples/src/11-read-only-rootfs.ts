/**
 * Workflow 11: a read-only root filesystem: writing to / fails, writing to a mounted volume works.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, err, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const vol = `volume://local/${name('rw')}`;
  await unwrap(lessl.stores.volume.create({ id: vol }));
  const root = await runTask(lessl, { image: BASE, readOnlyRootfs: true, cmd: ['touch', '/etc/x'] });
  const data = await runTask(lessl, {
    image: BASE,
    readOnlyRootfs: true,
    volumes: [{ id: vol, at: '/data' }],
    cmd: ['sh', '-c', 'touch /data/x && echo ok'],
  });
  await unwrap(lessl.stores.volume.delete(vol));
  return { rootWriteExit: root.task?.exitCode, rootWriteError: err(root.task).trim(), volumeWrite: out(data.task).trim() };
};

main(import.meta, run);
