/**
 * The Docker backend reports what it does through the `logger` option: recovery and
 * reconciliation on open, janitor retries and removals, task start and end. Real engine; the
 * janitor case cuts the wire with the test proxy.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { expect, test } from 'vitest';
import { unwrap, type CredentialResolver, type Logger } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge } from '@lessl/docker';
import { Registry } from '@lessl/level';
import { engineProxy, eventually, n, tarOf } from './support.js';

const docker = new Docker();

interface Line {
  readonly level: string;
  readonly obj: Record<string, unknown>;
  readonly msg?: string;
}
const recording = (lines: Line[]): Logger => {
  const at =
    (level: string) =>
    (obj: object, msg?: string): void =>
      void lines.push({ level, obj: { ...(obj as Record<string, unknown>) }, ...(msg === undefined ? {} : { msg }) });
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
};
const find = (lines: readonly Line[], msg: string): Line | undefined => lines.find((l) => l.msg === msg);

test('open reports recovery and reconciliation (vanished, orphans removed)', async () => {
  const location = mkdtempSync(join(tmpdir(), 'lessl-log-'));
  try {
    const a = await unwrap(openDockerBackend({ registry: { location }, watch: false }));
    const lost = `volume://local/${n('lost')}`;
    const lostEl = await unwrap(a.stores.volume.create({ id: lost }));
    const instance = a.instanceId;
    await a.close();
    await docker.getVolume(String(lostEl.attributes.volumeName)).remove();
    const orphan = `lessl_local_orphan_${n('x')}`;
    await docker.createVolume({ Name: orphan, Labels: { 'lessl.id': 'volume://local/ghost', 'lessl.registry': instance } });
    // a create interrupted by a crash leaves its write intent
    const half = `volume://local/${n('half')}`;
    const reg = await Registry.open({ location });
    await reg.commit({ putIntent: [{ id: half, started: new Date().toISOString(), detail: { kind: 'volume' } }] });
    await reg.close();

    const lines: Line[] = [];
    const b = await unwrap(openDockerBackend({ registry: { location }, watch: false, logger: recording(lines) }));
    await b.close();
    expect(find(lines, 'recovered an interrupted create: its half-made object is removed')?.obj).toEqual({ id: half });
    expect(find(lines, 'backend opened')?.obj).toMatchObject({ recovered: 1 });
    const rec = find(lines, 'reconciled with Docker');
    expect(rec?.level).toBe('info');
    expect(rec?.obj).toMatchObject({ vanished: [lost], orphansRemoved: [`volume ${orphan}`] });
  } finally {
    rmSync(location, { recursive: true, force: true });
  }
}, 60_000);

test('janitor retries and removals, and task start and end, are logged; a credential never is', async () => {
  const proxy = await engineProxy();
  const lines: Line[] = [];
  const SECRET = 'docker-secret-never-logged';
  const credentials: CredentialResolver = async () => ({ env: { TOKEN: SECRET } });
  const l = await unwrap(openDockerBackend({ socketPath: proxy.path, logger: recording(lines), credentials }));
  try {
    const vol = `volume://local/${n('data')}`;
    proxy.refuse = /^DELETE \/[^ ]*containers\//;
    proxy.mode = 'refusing';
    await unwrap(l.stores.volume.create({ id: vol, data: await tarOf({ 'b.txt': 'b\n' }) }));
    proxy.mode = 'pass';
    expect(find(lines, 'janitor: a removal failed; retrying')?.obj).toMatchObject({ kind: 'container' });
    expect(await eventually(() => find(lines, 'janitor: removed on retry') !== undefined)).toBe(true);
    expect(find(lines, 'janitor: removed on retry')?.obj).toMatchObject({ kind: 'container' });
    await unwrap(l.stores.volume.delete(vol));

    await unwrap(l.stores.image.create({ id: 'image://local/base', data: await busyboxRootfsBytes() }));
    const spec = { cmd: ['sh', '-c', 'test -n "$TOKEN"; exit 5'], credentials: [{ name: 'TOKEN', ref: 'vault:ci' }] };
    const r = await unwrap(l.run({ image: 'image://local/base', spec }));
    expect(r.exitCode).toBe(5);
    expect(find(lines, 'task started')?.obj).toMatchObject({ task: r.id.key, run: 1 });
    expect(find(lines, 'task ended')?.obj).toMatchObject({ task: r.id.key, exitCode: 5, reason: 'exited' });
    expect(JSON.stringify(lines)).not.toContain(SECRET);
  } finally {
    await l.close();
    await purge(docker, l.instanceId);
    await proxy.close();
  }
}, 120_000);
