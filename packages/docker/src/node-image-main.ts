/**
 * `node packages/docker/dist/node-image-main.js [REPO:TAG]`: makes the Node image of this
 * machine's own files (`node-image.ts`; default `lessl/node-base:20`) on the engine the docker CLI
 * would use (DOCKER_HOST, DOCKER_CONTEXT, the current context, ...), unless it holds this node
 * already, and prints its reference. What scripts/node-base.sh runs; exit 1 with the reason on
 * stderr when the engine is not found or refuses.
 */
import { dockerClients } from './client/index.js';
import { discoverEngine } from './discovery.js';
import { ensureNodeImage } from './node-image.js';

/** The default image: the base of the service's container image (deploy/Dockerfile). */
const DEFAULT_REF = 'lessl/node-base:20';

/** `repo:tag` split at the tag's colon (one after the last slash). */
const splitRef = (ref: string): { repo: string; tag: string } => {
  const at = ref.lastIndexOf(':');
  return at > ref.lastIndexOf('/') ? { repo: ref.slice(0, at), tag: ref.slice(at + 1) } : { repo: ref, tag: 'latest' };
};

const main = async (): Promise<number> => {
  const found = await discoverEngine()();
  if (found._tag === 'Left') {
    process.stderr.write(`node-image: ${found.left.message}\n`);
    return 1;
  }
  const ref = await ensureNodeImage(dockerClients(found.right.docker, '').images, splitRef(process.argv[2] ?? DEFAULT_REF));
  process.stdout.write(`${ref}\n`);
  return 0;
};

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`node-image: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
