/**
 * Workflow 12: listing specific images: by name prefix, ro metadata, rw metadata, parent.
 */
import { unwrap, utf8 } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { BASE, ensureBase, main, name } from './common.js';

export const run = async (lessl: DockerBackend) => {
  await ensureBase(lessl);
  const stem = name('web');
  const ids: string[] = [];
  for (const [i, team] of ['red', 'blue', 'red'].entries()) {
    const id = `image://local/${stem}-${i}`;
    ids.push(id);
    await unwrap(
      lessl.stores.image.create({ id, parent: BASE, ro: utf8({ team }), rw: utf8({ stage: i === 2 ? 'prod' : 'dev' }) }),
    );
  }
  const keys = (els: readonly { id: { key: string } }[]) => els.map((e) => e.id.key);
  const result = {
    byPrefix: keys(await unwrap(lessl.stores.image.list({ namePrefix: stem }))),
    redTeam: keys(await unwrap(lessl.stores.image.list({ namePrefix: stem, ro: { team: 'red' } }))),
    inProd: keys(await unwrap(lessl.stores.image.list({ namePrefix: stem, rw: { stage: 'prod' } }))),
    childrenOfBase: (await unwrap(lessl.stores.image.list({ parent: BASE }))).length,
  };
  for (const id of ids) await unwrap(lessl.stores.image.delete(id));
  return result;
};

main(import.meta, run);
