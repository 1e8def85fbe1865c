/**
 * Workflow 5: a volume from a parent: the parent's content is copied into the new volume with
 * the archive API, through helper containers that are created but never started.
 */
import { pack } from 'tar-stream';
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const seed = pack();
  seed.entry({ name: 'config/app.conf', mode: 0o644 }, 'mode=production\n');
  seed.finalize();
  const parent = `volume://local/${name('template')}`;
  const child = `volume://local/${name('copy')}`;
  await unwrap(lessl.stores.volume.create({ id: parent, data: seed }));
  await unwrap(lessl.stores.volume.create({ id: child, parent }));
  await runTask(lessl, {
    image: BASE,
    volumes: [{ id: child, at: '/data' }],
    cmd: ['sh', '-c', 'echo changed > /data/config/app.conf'],
  });
  const c = await runTask(lessl, { image: BASE, volumes: [{ id: child, at: '/data' }], cmd: ['cat', '/data/config/app.conf'] });
  const p = await runTask(lessl, {
    image: BASE,
    volumes: [{ id: parent, at: '/data', readOnly: true }],
    cmd: ['cat', '/data/config/app.conf'],
  });
  await unwrap(lessl.stores.volume.delete(child));
  await unwrap(lessl.stores.volume.delete(parent));
  return { child: out(c.task).trim(), parentUnchanged: out(p.task).trim() };
};

main(import.meta, run);
