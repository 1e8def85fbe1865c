/**
 * Issue 15, item 4, on the test Swarm (s1 manager, s2 worker): a commit whose registry write fails
 * keeps the service of the main task it stopped, which the record still names; the service goes
 * once a commit is written.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, test } from 'vitest';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { unwrap } from '@lessl/core';
import { Registry } from '@lessl/level';
import { client, hostNamed, testHosts } from './hosts-support.js';
import { faultyDb, n, startDaemon } from './support.js';

const hosts = testHosts();

describe.skipIf(hosts === undefined)('a Swarm commit whose registry write fails', () => {
  const f = hosts!;
  const manager = client(hostNamed(f, f.swarm.manager));
  const instances: string[] = [];
  afterAll(async () => {
    for (const i of instances) await purge(manager, i);
  });
  /** Whether the service exists on the manager. */
  const exists = (serviceId: string): Promise<boolean> =>
    manager
      .getService(serviceId)
      .inspect()
      .then(
        () => true,
        () => false,
      );

  test('keeps the service the record names (unbind of a running main task); the next written commit removes it', async () => {
    let armed = false;
    const location = mkdtempSync(join(tmpdir(), 'lessl-swarm-atomic-'));
    const db = faultyDb(location, (keys) => armed && keys.some((k) => k.startsWith('x!')));
    const l = await unwrap(
      openDockerBackend({
        socketPath: hostNamed(f, f.swarm.manager).socket,
        swarm: { registry: f.registry, enginesSetNoNewPrivileges: true },
        registry: await Registry.open({ db }),
        watch: false,
      }),
    );
    instances.push(l.instanceId);
    try {
      const image = `image://local/${n('swarm-atomic')}`;
      await unwrap(l.stores.image.create({ id: image, data: await busyboxRootfsBytes() }));
      const { x, task } = await startDaemon(l, image);
      const serviceId = String((await unwrap(l.stores.executor.read(x))).attributes.serviceId);
      armed = true;
      const failed = await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x)), task))));
      expect(failed.committed).toBe(false);
      expect(!failed.committed && failed.error._tag).toBe('RuntimeError');
      // the task was stopped (that cannot be undone), but its service, which the record still names, is there
      expect((await unwrap(l.stores.executor.read(x))).attributes.serviceId).toBe(serviceId);
      expect(await exists(serviceId)).toBe(true);
      armed = false;
      const done = await unwrap(l.composer.commit(await unwrap(l.composer.unbind(await unwrap(l.composer.handle(x)), task))));
      expect(done.committed).toBe(true);
      expect(await exists(serviceId)).toBe(false);
      await unwrap(l.stores.executor.delete(x));
    } finally {
      await l.close();
    }
  });
});
