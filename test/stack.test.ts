/**
 * deploy/stack.yml on the test Swarm of scripts/hosts.sh (s1 manager, s2 worker, the registry
 * the nodes pull from): the image (scripts/image.sh) is pushed to that registry, the stack
 * deployed on s1 with a config whose docker.swarm section runs tasks as Swarm services on the
 * workers and the admin token as a Docker secret; the service answers /healthz from this
 * namespace, a task submitted over REST runs on s2 and its output comes back over REST; after
 * `docker stack rm` and the data volume's removal nothing of it is left on either node. Without
 * scripts/hosts.sh it skips, except under CI=true, where it fails.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { hostNamed, testHosts } from '../packages/docker/test/hosts-support.js';
import { buildImage, docker, sh, until } from './image-support.js';
import { root } from './snippets.js';

const hosts = testHosts(); // undefined: scripts/hosts.sh did not run (under CI=true it throws: never a skip there)
const swarmOf = hosts ?? { registry: '', hosts: [], swarm: { manager: 's1', workers: ['s2'] } };
/** A node of the test Swarm: its name, address, socket and DOCKER_HOST. */
const node = (name: string) => {
  const h = hosts === undefined ? { name, address: '', socket: '' } : hostNamed(hosts, name);
  return { name: h.name, address: h.address, socket: h.socket, docker: `unix://${h.socket}` };
};
const manager = node(swarmOf.swarm.manager);
const worker = node(swarmOf.swarm.workers[0] ?? 's2');
const STACK = `lesslstack${process.pid}`;
const TOKEN = 'lsl_stack-test-admin-token-0123456789';
const IMAGE = `${swarmOf.registry}/lessl/lessl:test`;
const port = 20_000 + (process.pid % 10_000);
const url = `http://${manager.address}:${port}`;
let dir = '';

/** The stack's service on the manager, as `docker service ps` shows it (for failure messages). */
const servicePs = (): Promise<string> =>
  docker(['service', 'ps', '--no-trunc', `${STACK}_lessl`], manager.docker)
    .then(async (ps) => `${ps}\n${await docker(['service', 'logs', '--tail', '5', `${STACK}_lessl`], manager.docker)}`)
    .catch(String);

/** The image on the manager, pushed to the registry the nodes pull from (loaded only when the manager's copy differs). */
const pushImage = async (): Promise<void> => {
  const tag = await buildImage();
  const id = (ref: string, on?: string) => docker(['image', 'inspect', '--format', '{{.Id}}', ref], on).catch(() => '');
  const [want, had] = [await id(tag), await id(tag, manager.docker)];
  if (want !== had) {
    const load = await sh('bash', ['-c', `docker save ${tag} | DOCKER_HOST=${manager.docker} docker load -q`]);
    if (load.code !== 0) throw new Error(`loading ${tag} on ${manager.name}: ${load.stderr}`);
    if (had !== '') await docker(['rmi', had], manager.docker).catch(() => undefined); // the copy replaced
  }
  await docker(['tag', tag, IMAGE], manager.docker);
  await docker(['push', '-q', IMAGE], manager.docker);
};

/** The stack files' inputs: the config (tasks on the workers), the token's secret file, and this test's additions (the port, busybox). */
const writeInputs = (): Record<string, string> => {
  const swarm = { registry: swarmOf.registry, enginesSetNoNewPrivileges: true, constraints: ['node.role==worker'] };
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ docker: { swarm } }));
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`);
  // an image `busybox` (--busybox) from the manager's /bin/busybox
  writeFileSync(
    join(dir, 'test.yml'),
    `version: '3.8'\nservices:\n  lessl:\n    command: ['--port', '${port}', '--config', '/etc/lessl/config.json', '--busybox']\n` +
      `    volumes:\n      - { type: bind, source: /bin/busybox, target: /bin/busybox, read_only: true }\n`,
  );
  return {
    LESSL_IMAGE: IMAGE,
    LESSL_CONFIG: join(dir, 'config.json'),
    LESSL_ADMIN_TOKEN_SECRET: join(dir, 'token'),
    DOCKER_SOCKET: manager.socket,
    DOCKER_GID: String(statSync(manager.socket).gid),
  };
};

/** Everything of the stack on `on`: services, containers and volumes (one line each). */
const leftOn = async (on: string): Promise<string[]> => {
  const ns = `label=com.docker.stack.namespace=${STACK}`;
  const lines = await Promise.all([
    on === manager.docker ? docker(['service', 'ls', '-q', '--filter', ns], on) : Promise.resolve(''),
    docker(['ps', '-aq', '--filter', ns], on),
    docker(['volume', 'ls', '-q', '--filter', `name=${STACK}_`], on),
  ]);
  return lines.flatMap((l) => l.split('\n')).filter((l) => l !== '');
};

/** `docker stack rm`, then (once its containers are gone) the data volume it leaves by design. */
const removeStack = async (): Promise<void> => {
  await docker(['stack', 'rm', STACK], manager.docker).catch(() => undefined);
  await until(`the containers of stack ${STACK} are gone from ${manager.name}`, 30_000, async () =>
    (await docker(['ps', '-aq', '--filter', `label=com.docker.stack.namespace=${STACK}`], manager.docker)) === ''
      ? true
      : undefined,
  );
  await docker(['volume', 'rm', '-f', `${STACK}_data`], manager.docker);
};

describe.skipIf(hosts === undefined)('deploy/stack.yml on the test Swarm', () => {
  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lessl-stack-'));
    await pushImage();
    const env = { ...writeInputs(), DOCKER_HOST: manager.docker };
    const stack = ['stack', 'deploy', '-c', join(root, 'deploy', 'stack.yml'), '-c', join(dir, 'test.yml'), STACK];
    const r = await sh('docker', stack, env);
    if (r.code !== 0) throw new Error(`docker stack deploy: ${r.stderr}`);
    await until(
      `the service answers ${url}/healthz`,
      60_000,
      async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined),
      servicePs,
    );
  }, 400_000);

  afterAll(async () => {
    await removeStack().catch(() => undefined);
    if (dir !== '') rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  test('the service runs on the manager as uid 10001; a task submitted over REST runs on the worker, its output read back over REST', async () => {
    expect(
      await docker(
        ['service', 'ps', '--format', '{{.Node}}', '--filter', 'desired-state=running', `${STACK}_lessl`],
        manager.docker,
      ),
    ).toBe(manager.name);
    const container = await docker(
      ['ps', '-q', '--filter', `label=com.docker.swarm.service.name=${STACK}_lessl`],
      manager.docker,
    );
    const ids = await docker(
      ['exec', container, 'node', '-e', 'console.log(process.getuid(), process.getgid())'],
      manager.docker,
    );
    expect(ids).toBe(`10001 ${statSync(manager.socket).gid}`); // the image's user, the socket's group
    const since = Math.floor(Date.now() / 1000) - 1;
    const spec = { version: 1.0, daemon: false, image: 'busybox', ttl: 600, cmd: ['echo hi from a worker && echo $((6 * 7))'] };
    const res = await fetch(`${url}/v1/tasks?wait=60`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(spec),
    });
    const task = (await res.json()) as { id: string; state: string; exitCode: number | null };
    expect(task, JSON.stringify(task)).toMatchObject({ state: 'exited', exitCode: 0 });
    const out = await fetch(`${url}/v1/tasks/${task.id}/logs`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(await out.text()).toBe('hi from a worker\n42\n');

    // where it ran: the worker's engine started its service's container, the manager's did not
    const events = [
      'events',
      '--since',
      String(since),
      '--until',
      String(Math.ceil(Date.now() / 1000)),
      '--filter',
      'type=container',
    ];
    const started = async (on: string) => (await docker(events, on)).includes(task.id);
    expect(await started(worker.docker)).toBe(true);
    expect(await started(manager.docker)).toBe(false);
  }, 120_000);

  test('docker stack rm and the data volume removed: no service, container or volume of it left on either node', async () => {
    await removeStack();
    expect(await leftOn(manager.docker)).toEqual([]);
    expect(await leftOn(worker.docker)).toEqual([]);
  }, 60_000);
});
