/**
 * The test engines of `scripts/hosts.sh` themselves (docs/hosts.md): what the multi-engine and
 * Swarm tests rely on. Every engine answers over its socket and over mutual TLS and refuses a
 * client without a certificate, each is its own engine, none can reach outside, the Swarm has two
 * Ready nodes, and the registry on 10.99.0.1:5000 carries an image from one engine to another.
 */
import { execFileSync } from 'node:child_process';
import Docker from 'dockerode';
import { afterAll, describe, expect, test } from 'vitest';
import { busyboxRootfs } from '@lessl/docker';
import { client, hostNamed, testHosts, tlsOptions } from './hosts-support.js';
import { n } from './support.js';

const hosts = testHosts();

/** Reads a Docker progress stream to its end; rejects on an `error` inside it. */
const progress = (d: Docker, s: NodeJS.ReadableStream): Promise<void> =>
  new Promise((resolve, reject) =>
    d.modem.followProgress(
      s,
      (err: Error | null, out: { error?: string }[]) => {
        const failed = out?.find((m) => typeof m.error === 'string');
        if (err !== null) reject(err);
        else if (failed !== undefined) reject(new Error(failed.error));
        else resolve();
      },
      () => undefined,
    ),
  );

describe.skipIf(hosts === undefined)('the test engines of scripts/hosts.sh', () => {
  const f = hosts!;
  const cleanups: (() => Promise<unknown>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c().catch(() => undefined);
  });

  test('five engines: h1-h3 and the Swarm s1 (manager) + s2 (worker)', () => {
    expect(f.hosts.map((h) => h.name)).toEqual(['h1', 'h2', 'h3', 's1', 's2']);
    expect(f.swarm).toEqual({ manager: 's1', workers: ['s2'] });
    expect(f.registry).toBe('10.99.0.1:5000');
  });

  test('every engine answers over its unix socket and over mutual TLS, each with its own engine ID', async () => {
    const ids = new Set<string>();
    for (const h of f.hosts) {
      const viaSocket = (await client(h, 'socket').info()) as { ID: string; Name: string };
      const viaTls = (await client(h, 'tls').info()) as { ID: string; Name: string };
      expect(viaTls.ID).toBe(viaSocket.ID);
      expect(viaSocket.Name).toBe(h.name); // its own UTS namespace: the hostname is the engine's name
      ids.add(viaSocket.ID);
    }
    const root = (await new Docker().info()) as { ID: string };
    ids.add(root.ID);
    expect(ids.size).toBe(f.hosts.length + 1);
  });

  test('an engine refuses a TLS client without a certificate, and plain HTTP', async () => {
    const h = hostNamed(f, 'h1');
    const { ca, host, port } = tlsOptions(h);
    await expect(new Docker({ protocol: 'https', host, port, ca }).ping()).rejects.toThrow();
    await expect(new Docker({ protocol: 'http', host, port }).ping()).rejects.toThrow();
  });

  test('no engine has a default route: each reaches the lan and nothing else', () => {
    for (const h of f.hosts) {
      expect(execFileSync('ip', ['-n', h.netns, 'route', 'show', 'default']).toString().trim()).toBe('');
      const routes = execFileSync('ip', ['-n', h.netns, '-o', 'route', 'show']).toString();
      expect(routes).toContain(`10.99.0.0/24 dev eth0 proto kernel scope link src ${h.address}`);
    }
  });

  test('the Swarm has two Ready nodes: s1 the manager, s2 a worker', async () => {
    const nodes = (await client(hostNamed(f, f.swarm.manager)).listNodes()) as {
      Description: { Hostname: string };
      Spec: { Role: string };
      Status: { State: string; Addr: string };
    }[];
    const seen = nodes.map((x) => [x.Description.Hostname, x.Spec.Role, x.Status.State, x.Status.Addr]).sort();
    expect(seen).toEqual([
      ['s1', 'manager', 'ready', '10.99.0.21'],
      ['s2', 'worker', 'ready', '10.99.0.22'],
    ]);
    const worker = (await client(hostNamed(f, 's2')).info()) as { Swarm: { LocalNodeState: string; ControlAvailable: boolean } };
    expect(worker.Swarm).toMatchObject({ LocalNodeState: 'active', ControlAvailable: false });
  });

  test('an image pushed to the registry from one engine is pulled by another', async () => {
    const from = client(hostNamed(f, 'h1'));
    const to = client(hostNamed(f, 'h2'));
    const repo = `${f.registry}/lessl/${n('infra')}`;
    const ref = `${repo}:1`;
    cleanups.push(() => from.getImage(ref).remove({ force: true }));
    cleanups.push(() => to.getImage(ref).remove({ force: true }));
    await progress(
      from,
      await from.importImage(busyboxRootfs() as unknown as NodeJS.ReadableStream, { repo, tag: '1' } as object),
    );
    const pushed = (await from.getImage(ref).inspect()).Id;
    await progress(from, (await from.getImage(ref).push({ authconfig: { serveraddress: f.registry } })) as NodeJS.ReadableStream);
    await expect(to.getImage(ref).inspect()).rejects.toMatchObject({ statusCode: 404 });
    await progress(to, await to.pull(ref));
    expect((await to.getImage(ref).inspect()).Id).toBe(pushed);
    // and the image runs there (no network: the container has only lo)
    const c = await to.createContainer({
      Image: ref,
      Cmd: ['sh', '-c', 'echo from-registry'],
      HostConfig: { NetworkMode: 'none' },
    });
    cleanups.push(() => c.remove({ force: true }));
    await c.start();
    expect(((await c.wait()) as { StatusCode: number }).StatusCode).toBe(0);
    expect((await c.logs({ stdout: true, follow: false })).toString()).toContain('from-registry');
  });
});
