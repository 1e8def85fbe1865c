/**
 * Workflow 14: what happens if no storage is mapped to / in a container? A Docker container needs
 * an image as its root filesystem: the commit is rolled back with InvalidEntry (keys: rootfs),
 * the bind step is marked ERROR, and no container, executor record or event is left.
 */
import { unwrap } from '@lessl/core';
import type { DockerBackend } from '@lessl/docker';
import { main, name } from './common.js';

export const run = async (lessl: DockerBackend) => {
  const task = `task://local/${name('orphan')}`;
  await unwrap(lessl.stores.task.create({ id: task, spec: { cmd: ['echo', 'hi'] } }));
  const x = `executor://local/${name('x')}`;
  const c = lessl.composer;
  const h = await unwrap(c.bind(await unwrap(c.join(await unwrap(c.handle(x)), task)), task));
  const r = await unwrap(c.commit(h));
  const executor = await lessl.stores.executor.read(x)();
  const containers = await lessl.docker.listContainers({ all: true, filters: { label: [`lessl.id=${x}`] } });
  await unwrap(lessl.stores.task.delete(task));
  return {
    committed: r.committed,
    error: r.committed ? null : { tag: r.error._tag, keys: 'keys' in r.error ? r.error.keys : [], message: r.error.message },
    steps: r.results.map((s) => `${s.op}:${s.status}`),
    executorExists: executor._tag === 'Right',
    containers: containers.length,
  };
};

main(import.meta, run);
