/**
 * Workflow 4: a fresh volume: created empty, written by one task, read by the next (it persists
 * across executors).
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const vol = `volume://local/${name('fresh')}`;
  const el = await unwrap(lessl.stores.volume.create({ id: vol }));
  await runTask(lessl, { image: BASE, volumes: [{ id: vol, at: '/data' }], cmd: ['sh', '-c', 'echo kept > /data/note'] });
  const { task } = await runTask(lessl, { image: BASE, volumes: [{ id: vol, at: '/data' }], cmd: ['cat', '/data/note'] });
  await unwrap(lessl.stores.volume.delete(vol));
  return { volume: vol, dockerVolume: el.attributes.volumeName, readBack: out(task).trim() };
};

main(import.meta, run);
