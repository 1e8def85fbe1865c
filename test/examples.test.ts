/**
 * Every example runs against the real Docker engine, and its outcome is checked.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { purge, type DockerBackend } from '@lessl/docker';
import { openExample } from '../examples/src/common.js';
import { run as ex01 } from '../examples/src/01-image-scratch-parent.js';
import { run as ex02 } from '../examples/src/02-image-specific-parent.js';
import { run as ex03 } from '../examples/src/03-image-metadata-only.js';
import { run as ex04 } from '../examples/src/04-fresh-volume.js';
import { run as ex05 } from '../examples/src/05-volume-from-parent.js';
import { run as ex06 } from '../examples/src/06-nfs-volume.js';
import { run as ex07 } from '../examples/src/07-nfs-volume-from-parent.js';
import { run as ex08 } from '../examples/src/08-use-image.js';
import { run as ex09 } from '../examples/src/09-use-volume-and-image.js';
import { run as ex10 } from '../examples/src/10-non-persistent-volume.js';
import { run as ex11 } from '../examples/src/11-read-only-rootfs.js';
import { run as ex12 } from '../examples/src/12-list-specific-images.js';
import { run as ex13 } from '../examples/src/13-image-freespace.js';
import { run as ex14 } from '../examples/src/14-no-storage-at-root.js';
import { run as audit } from '../examples/src/audit-log.js';
import { run as quickstart } from '../examples/src/quickstart.js';

let lessl: DockerBackend;
beforeAll(async () => {
  lessl = await openExample();
});
afterAll(async () => {
  await lessl.close();
  await purge(lessl.docker, lessl.instanceId);
});

describe('the 14 acceptance workflows', () => {
  test('01 image with a scratch parent (from a directory)', async () => {
    const r = await ex01(lessl);
    expect(r.parent).toBeNull();
    expect(r.output).toBe('built from a directory');
  });
  test('02 image with a specific parent', async () => {
    const r = await ex02(lessl);
    expect(r.parent).toBe('image://local/busybox');
    expect(r.output).toBe('hello from the child image');
    expect(r.label).toBe('hello'); // ro metadata is readable label text
    expect(r.parentDeleteWhileChildExists).toBe('InUse');
  });
  test('03 metadata-only image', async () => {
    const r = await ex03(lessl);
    // its own ro metadata as labels; Docker labels also inherit the parent's
    expect(Object.keys(r.labels)).toEqual(
      expect.arrayContaining(['lessl.ro.channel', 'lessl.ro.release', 'lessl.ro.org.lessl.base']),
    );
    expect(r.layers).toBeGreaterThanOrEqual(Number(r.parentLayers));
  });
  test('04 fresh volume', async () => {
    expect((await ex04(lessl)).readBack).toBe('kept');
  });
  test('05 volume from a parent', async () => {
    expect(await ex05(lessl)).toEqual({ child: 'changed', parentUnchanged: 'mode=production' });
  });
  test('06 nfs volume', async () => {
    const r = await ex06(lessl);
    expect(r.driver).toBe('local');
    expect(r.options).toMatchObject({ type: 'nfs', device: ':/exports/shared' });
  });
  test('07 nfs volume from a parent is InvalidParent and creates nothing', async () => {
    const r = await ex07(lessl);
    expect(r.error?.tag).toBe('InvalidParent');
    expect(r.created).toBe(false);
  });
  test('08 use of an image', async () => {
    expect(await ex08(lessl)).toEqual({ committed: true, exitCode: 3, stdout: 'to-stdout', stderr: 'to-stderr' });
  });
  test('09 use of a volume and an image', async () => {
    expect((await ex09(lessl)).sum).toBe('55');
  });
  test('10 non-persistent volume', async () => {
    expect(await ex10(lessl)).toEqual({ written: 'temp', fstype: 'tmpfs', filesSeenByNextExecutor: 0 });
  });
  test('11 read-only root filesystem', async () => {
    const r = await ex11(lessl);
    expect(r.rootWriteExit).not.toBe(0);
    expect(r.rootWriteError).toMatch(/Read-only file system/);
    expect(r.volumeWrite).toBe('ok');
  });
  test('12 listing specific images', async () => {
    const r = await ex12(lessl);
    expect(r.byPrefix).toHaveLength(3);
    expect(r.redTeam).toEqual([r.byPrefix[0], r.byPrefix[2]]);
    expect(r.inProd).toEqual([r.byPrefix[2]]);
    expect(r.childrenOfBase).toBeGreaterThanOrEqual(3);
  });
  test('13 image with a free-space requirement', async () => {
    const r = await ex13(lessl);
    expect(r.imageFreeSpace).toBe('Unsupported');
    expect(r.localVolumeSize).toBe('Unsupported');
    expect(r.scratchVolumeKiB).toBe(65536);
  });
  test('14 no storage mapped to /', async () => {
    const r = await ex14(lessl);
    expect(r.committed).toBe(false);
    expect(r.error).toMatchObject({ tag: 'InvalidEntry', keys: ['rootfs'] });
    expect(r.steps).toContain('bind:ERROR');
    expect(r.executorExists).toBe(false);
    expect(r.containers).toBe(0);
  });
});

describe('subscribers and the main job', () => {
  test('audit log prints the event stream in order', async () => {
    const r = await audit(lessl);
    const types = r.events.map((l) => l.split(' ')[1]);
    expect(types).toEqual(expect.arrayContaining(['created', 'joined', 'bound', 'unbound', 'left', 'deleted']));
    const seqs = r.events.map((l) => Number(l.split(' ')[0]));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
  });
  test('quickstart composes an image from a directory with a volume and prints the output', async () => {
    const lines: string[] = [];
    const r = await quickstart(lessl, (s) => lines.push(s));
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe('hello from lessl\ninput says: forty-two\n');
    expect(r.events).toEqual(expect.arrayContaining(['bound', 'unbound', 'deleted']));
    expect(lines.join('\n')).toMatch(/audit events/);
  });
  test('examples run as scripts (node examples/dist/08-use-image.js)', async () => {
    const { stdout } = await promisify(execFile)('node', ['examples/dist/08-use-image.js'], { timeout: 60_000 });
    expect(stdout).toMatch(/"exitCode": 3/);
  });
});
