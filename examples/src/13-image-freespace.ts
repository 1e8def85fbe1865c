/**
 * Workflow 13: an image with a free-space requirement that would need a resize. Docker's
 * overlay2 layers have no size to grow, so the image store answers Unsupported, honestly. What
 * does work: a sized scratch volume (tmpfs with sizeBytes) mounted where the space is needed.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const r = await lessl.stores.image.create({
    id: `image://local/${name('big')}`,
    parent: BASE,
    options: { freeBytes: 512 * 1024 * 1024 },
  })();
  const localSize = await lessl.stores.volume.create({
    id: `volume://local/${name('sized')}`,
    options: { sizeBytes: 64 << 20 },
  })();
  const vol = `volume://tmp/${name('space')}`;
  await unwrap(lessl.stores.volume.create({ id: vol, options: { sizeBytes: 64 * 1024 * 1024 } }));
  const { task } = await runTask(lessl, {
    image: BASE,
    volumes: [{ id: vol, at: '/space' }],
    cmd: ['sh', '-c', "df -k /space | tail -1 | awk '{print $2}'"],
  });
  await unwrap(lessl.stores.volume.delete(vol));
  return {
    imageFreeSpace: r._tag === 'Left' ? r.left._tag : 'created',
    localVolumeSize: localSize._tag === 'Left' ? localSize.left._tag : 'created',
    scratchVolumeKiB: Number(out(task).trim()),
  };
};

main(import.meta, run);
