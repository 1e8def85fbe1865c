/**
 * Task input on a real engine, beyond the conformance cases: the warm path (exec into a pool
 * container) reads stdin too; a task whose output is not kept (`log: none`) still gets its input;
 * 50 MiB into a process that never reads it ends on the cold and the exec paths; back-pressure
 * reaches the producer (a process that reads 1 MiB of an endless stream pulls a bounded amount);
 * a failing producer ends the input where it failed; input over mutual TLS (a test engine of
 * scripts/hosts.sh) is half-closed too; nothing is left behind.
 */
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap } from '@lessl/core';
import { busyboxRootfs, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { hostNamed, testHosts } from './hosts-support.js';
import { eventually, n, startDaemon } from './support.js';

const docker = new Docker();
const BASE = `image://local/${n('stdin-base')}`;
// the engine must answer: a Docker test never skips
const l: DockerBackend = await unwrap(openDockerBackend());

beforeAll(() => unwrap(l.stores.image.create({ id: BASE, data: busyboxRootfs() })));
afterAll(() => l.close().then(() => purge(docker, l.instanceId)));

/** An endless producer of 64 KiB chunks that counts what it gave and whether it was let go. */
const counted = () => {
  const state = { bytes: 0, closed: false };
  const stream: AsyncIterable<Uint8Array> = {
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          state.bytes += 64 * 1024;
          yield new Uint8Array(64 * 1024).fill(0x61);
        }
      } finally {
        state.closed = true;
      }
    },
  };
  return { state, stream };
};

describe('stdin on Docker', () => {
  test('the warm path: a task run in a pool container reads its input', async () => {
    await unwrap(l.pool.configure([{ image: BASE, min: 1 }]));
    const hits = l.pool.stats().hits;
    const r = await unwrap(l.run({ image: BASE, spec: { cmd: ['cat'] }, stdin: 'warm in\n' }));
    expect([r.exitCode, text(r.stdout)]).toEqual([0, 'warm in\n']);
    expect(l.pool.stats().hits).toBe(hits + 1);
    await unwrap(l.pool.configure([]));
  });

  test('log: none keeps no output, and the process still gets its input (its exit code says so)', async () => {
    const spec = { cmd: ['sh', '-c', 'test "$(cat)" = "quiet in"'], log: { destination: 'none' } };
    const yes = await unwrap(l.run({ image: BASE, spec, stdin: 'quiet in' }));
    const no = await unwrap(l.run({ image: BASE, spec, stdin: 'other' }));
    expect([yes.exitCode, no.exitCode, yes.stdout.byteLength]).toEqual([0, 1, 0]);
  });

  test('50 MiB into a process that never reads it: the run ends, on the cold path and by exec', async () => {
    const big = new Uint8Array(50 << 20);
    const cold = await unwrap(l.run({ image: BASE, spec: { cmd: ['true'] }, stdin: big }));
    expect(cold.exitCode).toBe(0);
    const { x, task: main } = await startDaemon(l, BASE);
    const side = `task://local/${n('side')}`;
    await unwrap(l.stores.task.create({ id: side, spec: { cmd: ['true'], interaction: { stdin: true } } }));
    await unwrap(l.tasks.input(side, big));
    const h = await unwrap(l.composer.handle(x));
    const c = await unwrap(l.composer.commit(await unwrap(l.composer.bind(await unwrap(l.composer.join(h, side)), side))));
    expect(c.committed).toBe(true);
    expect((await unwrap(l.tasks.wait(side))).exitCode).toBe(0);
    await unwrap(l.tasks.kill(main, { signal: 'KILL' }));
  });

  test('back-pressure: a process that reads 1 MiB of an endless stream pulls a bounded amount; the producer is let go', async () => {
    const { state, stream } = counted();
    const spec = { cmd: ['sh', '-c', 'head -c 1048576 | wc -c'] };
    const r = await unwrap(l.run({ image: BASE, spec, stdin: stream }));
    expect([r.exitCode, text(r.stdout).trim()]).toEqual([0, '1048576']);
    expect(await eventually(() => state.closed)).toBe(true);
    expect(state.bytes).toBeLessThan(64 << 20);
  });

  test('a producer that fails ends the input where it failed: the process reads what came before', async () => {
    async function* failing(): AsyncGenerator<Uint8Array, void, undefined> {
      yield new TextEncoder().encode('before the failure\n');
      throw new Error('the producer broke');
    }
    const r = await unwrap(l.run({ image: BASE, spec: { cmd: ['cat'] }, stdin: failing() }));
    expect([r.exitCode, text(r.stdout)]).toEqual([0, 'before the failure\n']);
  });
});

const hosts = testHosts();

describe.skipIf(hosts === undefined)('stdin over mutual TLS (h3 of scripts/hosts.sh)', () => {
  test('the cold path and exec read their input to its end over a TLS connection', async () => {
    const h3 = hostNamed(hosts!, 'h3');
    const b = await unwrap(openDockerBackend({ hosts: [{ name: 'h3', url: h3.url, tls: h3.tls }] }));
    try {
      await unwrap(b.stores.image.create({ id: BASE, data: busyboxRootfs() }));
      const bytes = new Uint8Array(3 << 20).fill(0x62);
      const cold = await unwrap(b.run({ image: BASE, spec: { cmd: ['wc', '-c'] }, stdin: bytes }));
      expect([cold.exitCode, text(cold.stdout).trim()]).toEqual([0, String(3 << 20)]);
      const { x, task: main } = await startDaemon(b, BASE);
      const side = `task://local/${n('side')}`;
      await unwrap(b.stores.task.create({ id: side, spec: { cmd: ['wc', '-c'], interaction: { stdin: true } } }));
      await unwrap(b.tasks.input(side, bytes));
      const h = await unwrap(b.composer.handle(x));
      await unwrap(b.composer.commit(await unwrap(b.composer.bind(await unwrap(b.composer.join(h, side)), side))));
      const r = await unwrap(b.tasks.wait(side));
      expect([r.exitCode, text(r.stdout).trim()]).toEqual([0, String(3 << 20)]);
      await unwrap(b.tasks.kill(main, { signal: 'KILL' }));
    } finally {
      await b.close();
      await purge(new Docker({ socketPath: h3.socket }), b.instanceId);
    }
  });
});
