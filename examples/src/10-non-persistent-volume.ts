/**
 * Workflow 10: a non-persistent volume: the `volume://tmp` store makes tmpfs-backed volumes;
 * what one executor writes is gone for the next.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const vol = `volume://tmp/${name('scratch')}`;
  await unwrap(lessl.stores.volume.create({ id: vol }));
  const first = await runTask(lessl, {
    image: BASE,
    volumes: [{ id: vol, at: '/scratch' }],
    cmd: ['sh', '-c', 'echo temp > /scratch/f && cat /scratch/f && grep " /scratch " /proc/mounts | cut -d" " -f3'],
  });
  const second = await runTask(lessl, {
    image: BASE,
    volumes: [{ id: vol, at: '/scratch' }],
    cmd: ['sh', '-c', 'ls -A /scratch | wc -l'],
  });
  await unwrap(lessl.stores.volume.delete(vol));
  const [written, fstype] = out(first.task).trim().split('\n');
  return { written, fstype, filesSeenByNextExecutor: Number(out(second.task).trim()) };
};

main(import.meta, run);
