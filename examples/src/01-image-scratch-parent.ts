/**
 * Workflow 1: an image with a scratch parent: a directory on this machine, packed with tar-fs,
 * becomes an image of its own (no parent layer). Here the directory is a busybox root filesystem
 * written to a temp folder, so the image can run.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { extract } from 'tar-fs';
import { pipeline } from 'node:stream/promises';
import { unwrap } from '@lessl/core';
import { busyboxRootfs, type DockerBackend } from '@lessl/docker';
import { main, name, out, runTask } from './common.js';

export const run = async (lessl: DockerBackend) => {
  const dir = mkdtempSync(join(tmpdir(), 'lessl-ex1-'));
  await pipeline(busyboxRootfs(), extract(dir));
  writeFileSync(join(dir, 'etc', 'motd'), 'built from a directory\n');
  const id = `image://local/${name('scratch')}`;
  const image = await unwrap(lessl.stores.image.create({ id, options: { source: { type: 'directory', path: dir } } }));
  const { task } = await runTask(lessl, { image: id, cmd: ['cat', '/etc/motd'] });
  await unwrap(lessl.stores.image.delete(id));
  return { id, parent: image.parent?.key ?? null, layers: image.attributes.layers, output: out(task).trim() };
};

main(import.meta, run);
