/**
 * The quick start (`npm start`): an image from a directory, a volume with a file in it, a task
 * composed with them, run in a real container; prints its output and the audit events.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { extract } from 'tar-fs';
import { pack } from 'tar-stream';
import { unwrap, utf8, type LesslEvent } from '@lessl/core';
import { busyboxRootfs, purge, type DockerBackend } from '@lessl/docker';
import { err, name, openExample, out } from './common.js';

export const run = async (lessl: DockerBackend, print: (s: string) => void = console.log) => {
  const events: LesslEvent[] = [];
  const off = lessl.events.subscribe({}, (e) => events.push(e));

  // 1. an image from a directory: a busybox root filesystem plus an app script
  const dir = mkdtempSync(join(tmpdir(), 'lessl-quickstart-'));
  await pipeline(busyboxRootfs(), extract(dir));
  mkdirSync(join(dir, 'app'));
  writeFileSync(
    join(dir, 'app', 'report.sh'),
    '#!/bin/sh\necho "hello from lessl"\necho "input says: $(cat /data/input.txt)"\nwc -c /data/input.txt >&2\n',
    { mode: 0o755 },
  );
  const image = `image://local/${name('quickstart')}`;
  await unwrap(
    lessl.stores.image.create({
      id: image,
      options: { source: { type: 'directory', path: dir } },
      ro: utf8({ purpose: 'quickstart' }),
    }),
  );
  print(`image   ${image}`);

  // 2. a volume with a file in it
  const files = pack();
  files.entry({ name: 'input.txt', mode: 0o644 }, 'forty-two\n');
  files.finalize();
  const volume = `volume://local/${name('input')}`;
  await unwrap(lessl.stores.volume.create({ id: volume, data: files }));
  print(`volume  ${volume}`);

  // 3. a task, composed with both, bound and committed: the commit starts it in a container
  const task = `task://local/${name('report')}`;
  await unwrap(
    lessl.stores.task.create({
      id: task,
      spec: { cmd: ['/app/report.sh'], limits: { memoryBytes: 64 << 20, deadlineMs: 30_000 } },
    }),
  );
  const c = lessl.composer;
  let h = await unwrap(c.handle(`executor://local/${name('run')}`));
  h = await unwrap(c.join(h, image));
  h = await unwrap(c.join(h, volume, { mountpoint: '/data', readOnly: true }));
  h = await unwrap(c.bind(await unwrap(c.join(h, task)), task));
  const r = await unwrap(c.commit(h));
  // 4. wait for its end (lessl.tasks.logs(task, { follow: true }) streams the output meanwhile)
  const result = await unwrap(lessl.tasks.wait(task));
  print(`task    ${task}: exit ${result.exitCode}`);
  print('--- stdout');
  print(out(result).trimEnd());
  print('--- stderr');
  print(err(result).trimEnd());

  // 5. tidy up through lessl: leave, delete the executor, then the elements
  if (r.committed) {
    let done = await unwrap(c.handle(h.executor)); // the task's end moved the executor on: take a fresh handle
    for (const m of done.members) done = await unwrap(c.leave(done, m.id));
    await unwrap(c.commit(done));
    await unwrap(lessl.stores.executor.delete(h.executor));
  }
  for (const [store, id] of [
    [lessl.stores.task, task],
    [lessl.stores.volume, volume],
    [lessl.stores.image, image],
  ] as const)
    await unwrap(store.delete(id));
  off();
  print('--- audit events');
  for (const e of events)
    print(
      `${String(e.seq).padStart(3)} ${e.type.padEnd(8)} ${e.id.key}${e.detail.exitCode === undefined ? '' : ` exit=${String(e.detail.exitCode)}`}`,
    );
  return { exitCode: result.exitCode, stdout: out(result), events: events.map((e) => e.type) };
};

if (process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].split('/').pop() ?? '\0')) {
  void (async () => {
    let lessl: DockerBackend | undefined;
    try {
      lessl = await openExample();
      await run(lessl);
    } catch (e) {
      const le = (e as { error?: { _tag: string; message: string } }).error;
      console.error('quickstart failed:', le === undefined ? e : `${le._tag}: ${le.message}`);
      process.exitCode = 1;
    } finally {
      if (lessl !== undefined) {
        await lessl.close();
        await purge(lessl.docker, lessl.instanceId);
      }
    }
  })();
}
