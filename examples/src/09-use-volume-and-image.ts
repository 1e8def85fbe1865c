/**
 * Workflow 9: use of a volume and an image together: the image is the root filesystem, the
 * volume is mounted at /work; the task computes into the volume.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const vol = `volume://local/${name('work')}`;
  await unwrap(lessl.stores.volume.create({ id: vol }));
  const { task } = await runTask(lessl, {
    image: BASE,
    volumes: [{ id: vol, at: '/work' }],
    cmd: ['sh', '-c', 'seq 1 10 > /work/n && awk "{s+=\\$1} END {print s}" /work/n'],
  });
  await unwrap(lessl.stores.volume.delete(vol));
  return { sum: out(task).trim() };
};

main(import.meta, run);
