/**
 * The copies of images the Swarm driver makes: an image is pushed to a registry every node
 * reaches before a service runs it (`<registry>/lessl/<image hex>`), and deleting its element
 * removes the tag on the manager, the copies the nodes pulled, and the manifest in the registry.
 */
import * as E from 'fp-ts/lib/Either.js';
import { noopLogger, unavailable, type AnyError, type Element, type Logger } from '@lessl/core';
import type { ElementDriver } from '@lessl/kit';
import { dockerClients, type ImagesClient } from './client/index.js';
import { fromDocker, statusOf } from './errors.js';
import type { Host } from './host.js';
import { clientFor } from './hosts.js';
import { followJson } from './streams.js';
import type { SwarmNode, SwarmOptions } from './swarm-options.js';
import { imageIdOf } from './attributes.js';

/** How often an image still in use is tried again. */
const RETRY_MS = 200;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const hexOf = (imageId: string): string => imageId.replace(/^sha256:/, '');

/** Images pushed to the Swarm's registry, per manager engine (pushed once; forgotten when removed). */
const pushedBy = new WeakMap<Host, Set<string>>();

/** The images pushed for a manager engine. */
const pushedRefs = (engine: Host): Set<string> => {
  let pushed = pushedBy.get(engine);
  if (pushed === undefined) pushedBy.set(engine, (pushed = new Set()));
  return pushed;
};

/** `<registry>/lessl/<image hex>:latest`: where the Swarm driver pushes an image. */
const distributedRef = (swarm: SwarmOptions, imageId: string): { repo: string; ref: string } => {
  const repo = `${swarm.registry}/lessl/${hexOf(imageId)}`;
  return { repo, ref: `${repo}:latest` };
};

/** Deletes a manifest from a registry (https first, then plain http as Docker does for an insecure registry). */
const deleteManifest = async (registry: string, name: string, tag: string): Promise<void> => {
  const accept = 'application/vnd.docker.distribution.manifest.v2+json';
  for (const scheme of ['https', 'http']) {
    try {
      const base = `${scheme}://${registry}/v2/${name}/manifests`;
      const head = await fetch(`${base}/${tag}`, {
        method: 'HEAD',
        headers: { Accept: accept },
        signal: AbortSignal.timeout(10_000),
      });
      const digest = head.headers.get('docker-content-digest');
      if (head.ok && digest !== null) await fetch(`${base}/${digest}`, { method: 'DELETE', signal: AbortSignal.timeout(10_000) });
      return;
    } catch {
      // not this scheme (or the registry did not answer): the next, else the copy stays
    }
  }
};

/**
 * Removes every reference of `repo` an engine holds to an image: its tag and the digests a node's
 * pull by digest left (Swarm pins a service's image as `<repo>@sha256:...`), so that the copy goes
 * once nothing else names it. A node removes a removed service's containers a little later: a copy
 * still in use is tried again for `waitMs`. Never fails: what cannot be removed stays.
 */
const removeCopy = async (images: ImagesClient, repo: string, imageId: string, waitMs = 0): Promise<void> => {
  const info = await images.inspect(imageId).catch(() => undefined);
  const refs = [`${repo}:latest`, ...(info?.RepoDigests ?? []).filter((d) => d.startsWith(`${repo}@`))];
  for (const ref of refs) await removeRef(images, ref, Date.now() + waitMs);
};

/** Removes one image reference; while a finished task's container still holds it (409), tries again until `deadline`. */
const removeRef = async (images: ImagesClient, ref: string, deadline: number): Promise<void> => {
  for (;;) {
    const err: unknown = await images.remove(ref, { noprune: false }).then(
      () => undefined,
      (e: unknown) => e,
    );
    if (statusOf(err) !== 409 || Date.now() >= deadline) return;
    await sleep(RETRY_MS);
  }
};

/** How long the removal of a node's copy may take before it is given up (and logged). */
const NODE_TIMEOUT_MS = 10_000;

/** True when `p` settles well within `ms`; false when it fails or takes longer. */
const within = async (ms: number, p: Promise<unknown>): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms)));
  const ok = await Promise.race([
    p.then(
      () => true,
      () => false,
    ),
    late,
  ]);
  clearTimeout(timer);
  return ok;
};

/**
 * Removes the copies a Swarm node pulled, through its engine (`swarm.nodes`). A node that cannot
 * be reached is logged and skipped: the delete does not fail for it.
 */
const removeNodeCopies = async (
  instance: string,
  nodes: readonly SwarmNode[],
  repo: string,
  imageId: string,
  log: Logger,
): Promise<void> => {
  for (const node of nodes) {
    const docker = clientFor(node);
    const c = E.isRight(docker) ? dockerClients(docker.right, instance) : undefined;
    const done =
      c !== undefined &&
      (await within(
        NODE_TIMEOUT_MS,
        c.system.ping().then(() => removeCopy(c.images, repo, imageId, NODE_TIMEOUT_MS - 1000)),
      ));
    if (!done)
      log.warn({ node: node.name, url: node.url, imageId }, 'swarm: a node could not be reached; its copy of the image stays');
  }
};

/**
 * Removes the copies of an image the Swarm driver made: its tag on the manager, the copies the
 * nodes of `swarm.nodes` pulled, and its manifest in the registry (which must allow deletes:
 * `storage.delete.enabled: true`; its garbage collector then frees the layers). Never fails: what
 * cannot be removed stays (a node that cannot be reached is logged).
 */
export const removeDistributed = async (
  engine: Host,
  swarm: SwarmOptions,
  imageId: string,
  log: Logger = noopLogger,
): Promise<void> => {
  if (imageId === '') return;
  const { repo, ref } = distributedRef(swarm, imageId);
  pushedBy.get(engine)?.delete(ref);
  engine.expected.add(imageId);
  await removeCopy(engine.clients.images, repo, imageId);
  await removeNodeCopies(engine.instance, swarm.nodes ?? [], repo, imageId, log);
  await deleteManifest(swarm.registry, `lessl/${hexOf(imageId)}`, 'latest');
};

/**
 * An image driver that also removes an image's Swarm copies (`removeDistributed`) once its
 * element's image is removed, unless another element has the same content (`sameContent`).
 */
export const withSwarmCopies = (
  driver: ElementDriver,
  engine: Host,
  swarm: SwarmOptions,
  sameContent: (el: Element) => boolean,
  log: Logger = noopLogger,
): ElementDriver => ({
  ...driver,
  async destroy(el) {
    const r = await driver.destroy(el);
    if (E.isRight(r) && !sameContent(el)) await removeDistributed(engine, swarm, imageIdOf(el), log);
    return r;
  },
});

/**
 * Pushes an image to the registry every node reaches (once per manager engine; the registry
 * skips layers it has); answers the reference services run it by.
 */
export const distribute = async (
  engine: Host,
  swarm: SwarmOptions,
  task: string,
  imageId: string,
): Promise<E.Either<AnyError, string>> => {
  const { repo, ref } = distributedRef(swarm, imageId);
  const pushed = pushedRefs(engine);
  if (pushed.has(ref)) return E.right(ref);
  try {
    await engine.clients.images.tag(imageId, repo, 'latest');
    const s = await engine.clients.images.push(ref, { authconfig: { serveraddress: swarm.registry } });
    const r = await followJson(s);
    if (r.error !== undefined)
      return E.left(unavailable(task, `could not push the image to the Swarm's registry ${swarm.registry}: ${r.error}`));
  } catch (err) {
    return E.left(fromDocker(task, err));
  }
  pushed.add(ref);
  return E.right(ref);
};
