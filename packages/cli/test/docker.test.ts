/**
 * `lessl run` on a real Docker engine: the service's embedded default (Docker backend over an
 * on-disk database) with an image `busybox` made from the host's /bin/busybox; the seed-001
 * example spec runs through the CLI binary, its output streamed and its exit code propagated.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap } from '@lessl/core';
import { busyboxRootfsBytes, purge } from '@lessl/docker';
import { createServer, type LesslServer } from '@lessl/service';
import { SHUTDOWN_MS } from '../src/serve.js';
import { BIN, lessl, SEED_EXAMPLE } from './harness.js';

const docker = new Docker();
const TOKEN = 'lsl_cli-docker-test-admin-token';
let server: LesslServer;
let url = '';
let dir = '';

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'lessl-cli-docker-'));
  server = await createServer({ data: join(dir, 'data'), adminToken: TOKEN });
  await unwrap(server.backend.stores.image.create({ id: 'image://local/busybox', data: await busyboxRootfsBytes() }));
  url = await server.listen();
});
afterAll(async () => {
  const instance = server.backend.instanceId;
  await server.close();
  await purge(docker, instance);
  rmSync(dir, { recursive: true, force: true });
});

describe('lessl run on Docker', () => {
  test('the seed-001 example spec: resources in place, pwd, env; output streamed; the exit code is the failing command’s', async () => {
    const spec = SEED_EXAMPLE;
    const file = join(dir, 'seed.json');
    writeFileSync(file, JSON.stringify(spec));
    const r = await lessl(['run', file], { url, token: TOKEN });
    expect(r).toMatchObject({ code: 7, stdout: 'Hello World\nvalue in /opt\n' });
    const ok = await lessl(['run', '-'], { url, token: TOKEN, input: JSON.stringify({ ...spec, cmd: spec.cmd.slice(0, 2) }) });
    expect(ok).toMatchObject({ code: 0, stdout: 'Hello World\nvalue in /opt\n' });
    const left = await docker.listContainers({
      all: true,
      filters: { label: [`lessl.registry=${server.backend.instanceId}`] },
    });
    expect(left).toEqual([]);
  });
});

/** Starts the real `lessl serve` binary over `data`; answers it, its URL and its exit (code and stderr). */
const serveBin = async (data: string, ...more: string[]) => {
  const child = spawn(process.execPath, [BIN, '--json', 'serve', '--data', data, '--port', '0', '--busybox', ...more], {
    env: { ...process.env, LESSL_ADMIN_TOKEN: TOKEN },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<{ code: number | null; stderr: string }>((resolve) =>
    child.on('close', (code) => resolve({ code, stderr })),
  );
  const ready = await new Promise<{ url: string; registry: string }>((resolve, reject) => {
    createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as { url: string; registry: string }));
    void exited.then((e) => reject(new Error(`lessl serve exited ${String(e.code)}: ${e.stderr}`)));
  });
  return { child, exited, ...ready };
};

describe('lessl serve on Docker', () => {
  test('SIGTERM with a daemon task running: the process exits 0 within the bound; the next start reconciles the task', async () => {
    const data = join(dir, 'serve-data');
    const first = await serveBin(data);
    let instance = first.registry;
    try {
      const spec = JSON.stringify({ version: 1.0, daemon: true, image: 'busybox', ttl: 600, cmd: ['echo up'] });
      const r = await lessl(['--json', 'run', '-'], { url: first.url, token: TOKEN, input: spec });
      const t = JSON.parse(r.stdout) as { id: string; state: string };
      expect(t.state).toBe('running');

      // SIGTERM: it must exit by itself (no process.exit in this test), within the documented bound
      first.child.kill('SIGTERM');
      const bound = new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), SHUTDOWN_MS + 5_000));
      const end = await Promise.race([first.exited, bound]);
      if (end === 'still running') first.child.kill('SIGKILL');
      expect(end).toMatchObject({ code: 0 });
      expect(end === 'still running' ? '' : end.stderr).not.toContain('did not finish');

      // the next start over the same data finds the daemon again: still running, and it takes more commands
      const second = await serveBin(data);
      instance = second.registry;
      try {
        const again = await lessl(['exec', t.id, '--', 'echo', 'again'], { url: second.url, token: TOKEN });
        expect(again).toMatchObject({ code: 0, stdout: 'again\n' });
        expect((await lessl(['rm', t.id], { url: second.url, token: TOKEN })).code).toBe(0);
      } finally {
        second.child.kill('SIGTERM');
        await second.exited;
      }
    } finally {
      first.child.kill('SIGKILL');
      await purge(docker, instance);
    }
  }, 60_000);

  test("the config's docker.directPorts: false: a daemon's port is proxied through the engine (an exec'd forwarder in its container)", async () => {
    const config = join(dir, 'engine-ports.json');
    writeFileSync(config, JSON.stringify({ docker: { directPorts: false } }));
    const svc = await serveBin(join(dir, 'engine-ports-data'), '--config', config);
    try {
      const serve = 'echo through the engine > /tmp/index.html && httpd -f -p 8080 -h /tmp';
      const spec = JSON.stringify({ daemon: true, image: 'busybox', ttl: 600, ports: [8080], cmd: [serve] });
      const r = await lessl(['--json', 'run', '-'], { url: svc.url, token: TOKEN, input: spec });
      const { id } = JSON.parse(r.stdout) as { id: string };
      let got = { status: 0, body: '' };
      for (let i = 0; i < 100 && got.status !== 200; i++) {
        const res = await fetch(`${svc.url}/v1/tasks/${id}/ports/8080/index.html`, {
          headers: { authorization: `Bearer ${TOKEN}` },
        });
        got = { status: res.status, body: await res.text() };
        if (got.status !== 200) await new Promise((res) => setTimeout(res, 100));
      }
      expect(got).toEqual({ status: 200, body: 'through the engine\n' });
      const [c] = await docker.listContainers({ filters: { label: [`lessl.registry=${svc.registry}`] } });
      const execs = await Promise.all(
        ((await docker.getContainer(c?.Id ?? '').inspect()).ExecIDs ?? []).map((e) => docker.getExec(e).inspect()),
      );
      const forwarders = execs.filter(
        (e) => e.ProcessConfig.entrypoint === '/.lessl/agent' && e.ProcessConfig.arguments.includes('--forward'),
      );
      expect(forwarders).toHaveLength(1);
    } finally {
      svc.child.kill('SIGTERM');
      await svc.exited;
      await purge(docker, svc.registry);
    }
  }, 60_000);
});
