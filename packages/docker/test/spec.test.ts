/**
 * Task spec fields and options on a real engine: what each field becomes in Docker, and
 * that credentials reach the task but no registry record, event or container label.
 */
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { MemoryLevel } from 'memory-level';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { text, unwrap, type LesslEvent } from '@lessl/core';
import type { StringLevel } from '@lessl/level';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';

const docker = new Docker();
const BASE = 'image://local/base';
const n = (stem: string): string => `${stem}-${Math.random().toString(36).slice(2, 8)}`;
const SECRET = `tok-${n('s')}-${n('s')}`;
const SECRET_FILE = `file-${n('s')}-${n('s')}`;
const db = new MemoryLevel<string, string>({ valueEncoding: 'utf8' });
let l: DockerBackend;
const events: LesslEvent[] = [];

beforeAll(async () => {
  l = await unwrap(
    openDockerBackend({
      registry: { db: db as unknown as StringLevel },
      credentials: async (ref) =>
        ref === 'vault:ci' ? { env: { TOKEN: SECRET }, files: { '/run/secrets/token': SECRET_FILE } } : {},
    }),
  );
  l.events.subscribe({}, (e) => events.push(e));
  await unwrap(l.stores.image.create({ id: BASE, data: await busyboxRootfsBytes() }));
});
afterAll(async () => {
  await l.close();
  await purge(docker, l.instanceId);
});

/** Starts a task in a new executor; answers the task, the executor and its container. */
const start = async (spec: Record<string, unknown>, backend?: Record<string, unknown>) => {
  const task = `task://local/${n('t')}`;
  await unwrap(l.stores.task.create({ id: task, spec }));
  let h = await unwrap(l.composer.handle(`executor://local/${n('x')}`, backend === undefined ? {} : { backend }));
  h = await unwrap(l.composer.bind(await unwrap(l.composer.join(await unwrap(l.composer.join(h, BASE)), task)), task));
  const r = await unwrap(l.composer.commit(h));
  if (!r.committed) throw new Error(`commit refused: ${r.error.message}`);
  return { task, x: h.executor.key, container: docker.getContainer(String(r.executor.attributes.containerId)) };
};

/** The task's output so far. */
const output = async (task: string): Promise<string> => {
  let out = '';
  for await (const c of l.tasks.logs(task)) out += text(c.data);
  return out;
};

const sha256 = async (s: string): Promise<string> => {
  const { createHash } = await import('node:crypto');
  return createHash('sha256').update(s).digest('hex');
};

describe('credentials', () => {
  test('env and files reach the task; the secret is in no registry record, event, label or error', async () => {
    const spec = {
      cmd: [
        'sh',
        '-c',
        'printf %s "$TOKEN" | sha256sum; sha256sum < /run/secrets/token; stat -c %a /run/secrets/token; sleep 30',
      ],
      daemon: true,
      credentials: [{ name: 'TOKEN', ref: 'vault:ci' }],
    };
    const { task, container } = await start(spec);
    // the container's labels and the engine's own view of its config carry no secret but Env (the task's environment)
    const info = await container.inspect();
    expect(JSON.stringify(info.Config.Labels)).not.toContain(SECRET);
    expect(info.Config.Env).toContain(`TOKEN=${SECRET}`);
    const labelled = await docker.listContainers({ all: true, filters: { label: [`lessl.registry=${l.instanceId}`] } });
    expect(JSON.stringify(labelled.map((c) => c.Labels))).not.toContain(SECRET);
    for (let i = 0; i < 100 && (await output(task)).split('\n').length < 4; i++) await new Promise((r) => setTimeout(r, 100));
    await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
    const r = await unwrap(l.tasks.wait(task));
    expect(text(r.stdout).split('\n').slice(0, 3)).toEqual([
      `${await sha256(SECRET)}  -`,
      `${await sha256(SECRET_FILE)}  -`,
      '400',
    ]);
    // every registry record (elements, compositions, statuses, output, the event log)
    const all: string[] = [];
    for await (const [k, v] of db.iterator()) all.push(`${k}=${v}`);
    expect(all.length).toBeGreaterThan(5);
    for (const s of [SECRET, SECRET_FILE]) {
      expect(all.join('\n')).not.toContain(s);
      expect(JSON.stringify(events)).not.toContain(s);
    }
  });
});

describe('restart', () => {
  test('a daemon gets HostConfig.RestartPolicy; Docker restarts it and lessl follows every run to the end', async () => {
    const { task, container } = await start({
      cmd: ['sh', '-c', 'echo run; exit 2'],
      daemon: true,
      restart: { policy: 'on-failure', maxRetries: 2 },
    });
    const info = await container.inspect();
    expect(info.HostConfig.RestartPolicy).toEqual({ Name: 'on-failure', MaximumRetryCount: 2 });
    const r = await unwrap(l.tasks.wait(task));
    expect([r.exitCode, text(r.stdout)]).toEqual([2, 'run\nrun\nrun\n']);
    expect((await container.inspect()).RestartCount).toBe(2);
  });
  test('without a policy (or never) the daemon is not restarted by Docker', async () => {
    const { task, container } = await start({ cmd: ['sleep', '30'], daemon: true, restart: { policy: 'never' } });
    expect((await container.inspect()).HostConfig.RestartPolicy?.Name).toBe('no');
    await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
  });
});

describe('log destination', () => {
  test("none: Docker keeps no log either (LogConfig none); buffer: the engine's default driver", async () => {
    const quiet = await start({ cmd: ['sh', '-c', 'echo hidden; sleep 30'], daemon: true, log: { destination: 'none' } });
    expect((await quiet.container.inspect()).HostConfig.LogConfig?.Type).toBe('none');
    await unwrap(l.tasks.kill(quiet.task, { signal: 'KILL' }));
    expect((await unwrap(l.tasks.wait(quiet.task))).stdout.byteLength).toBe(0);
  });
});

describe('options', () => {
  test('Docker executor options are decoded exactly: capAdd and stopGraceSeconds work, unknown or mistyped ones are named', async () => {
    const { task, container } = await start({ cmd: ['sleep', '30'], daemon: true }, { capAdd: ['NET_RAW'], stopGraceSeconds: 1 });
    expect((await container.inspect()).HostConfig.CapAdd).toEqual(['NET_RAW']);
    await unwrap(l.tasks.kill(task, { signal: 'KILL' }));
    for (const [backend, key] of [
      [{ capAdd: 'ALL' }, 'options.backend.capAdd'],
      [{ cap_add: ['NET_RAW'] }, 'options.backend.cap_add'],
      [{ stopGraceSeconds: -1 }, 'options.backend.stopGraceSeconds'],
      [{ privileged: true }, 'options.backend.privileged'],
    ] as const) {
      const r = await l.composer.handle(`executor://local/${n('x')}`, { backend })();
      expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual([key]);
    }
  });
  test('openDockerBackend refuses unknown or mistyped options with InvalidEntry naming them, before touching the engine', async () => {
    for (const [opts, key] of [
      [{ sockPath: '/var/run/docker.sock' }, 'sockPath'],
      [{ callTimeoutMs: -1 }, 'callTimeoutMs'],
      [{ registry: { location: '/tmp/x', memory: true } }, 'registry.memory'],
      [{ docker: {} }, 'docker'],
      [{ credentials: 'vault' }, 'credentials'],
    ] as const) {
      const r = await openDockerBackend(opts as never)();
      expect(E.isLeft(r) && r.left._tag === 'InvalidEntry' && r.left.keys).toEqual([key]);
    }
  });
});
