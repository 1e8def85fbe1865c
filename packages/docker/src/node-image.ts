/**
 * The one builder of "a Node image from this machine's own files", for engines that reach no
 * registry: the running `node` at /usr/local/bin/node, the shared libraries it loads (`ldd`) at
 * their paths, /etc/passwd and /etc/group with root and an unprivileged user `lessl` (uid and
 * gid 10001), its home and a /tmp; `node` is the entrypoint and the image's only program (no
 * shell, no package manager), and the image is labelled with the node version it holds
 * (`lessl.node-version`). Nothing is downloaded: the files are imported as one layer.
 *
 * The reaper's image is made by it, and so is the service image's base, `lessl/node-base:20`
 * (scripts/node-base.sh runs `node-image-main.js`).
 */
import { execFile } from 'node:child_process';
import { createReadStream, statSync } from 'node:fs';
import { promisify } from 'node:util';
import { pack, type Pack } from 'tar-stream';
import type { ImagesClient } from './client/images.js';
import { statusOf } from './errors.js';
import { labelChanges } from './labels.js';
import { followJson } from './streams.js';

/** The label that says which node an image made by `ensureNodeImage` holds (`process.version`). */
export const NODE_VERSION_LABEL = 'lessl.node-version';

/** The unprivileged user of the image (uid and gid). */
export const NODE_IMAGE_USER = 10001;

/** What to make: the image's name and the labels it carries besides `lessl.node-version`. */
export interface NodeImageRequest {
  readonly repo: string;
  readonly tag: string;
  readonly labels?: Readonly<Record<string, string>>;
}

const run = promisify(execFile);

/** The shared libraries the running node loads (`ldd`), by absolute path. */
const nodeLibraries = async (): Promise<string[]> => {
  const { stdout } = await run('ldd', [process.execPath]);
  const libs = [...stdout.matchAll(/(?:=>\s+)?(\/\S+)\s+\(0x/g)].map((m) => m[1] ?? '').filter((p) => p !== '');
  return [...new Set(libs)];
};

/** Adds a file's content (symlinks followed) to a tar under `name`, with its permission bits. */
const addFile = (p: Pack, name: string, path: string, mtime: Date): Promise<void> =>
  new Promise((resolve, reject) => {
    const st = statSync(path);
    const entry = p.entry({ name, size: st.size, mode: st.mode & 0o777, mtime }, (err) => (err ? reject(err) : resolve()));
    createReadStream(path).on('error', reject).pipe(entry);
  });

const PASSWD = `root:x:0:0:root:/root:/usr/sbin/nologin\nlessl:x:${NODE_IMAGE_USER}:${NODE_IMAGE_USER}:lessl:/home/lessl:/usr/sbin/nologin\n`;
const GROUP = `root:x:0:\nlessl:x:${NODE_IMAGE_USER}:\n`;

/**
 * Fills the root filesystem: directories, the users, node and its libraries; then ends the tar.
 * Every entry has the node binary's mtime, so the same node gives the same layer (the reaper's
 * image and the service's base share it on an engine).
 */
const fillRootfs = async (p: Pack, libs: readonly string[]): Promise<void> => {
  const mtime = statSync(process.execPath).mtime;
  p.entry({ name: 'tmp', type: 'directory', mode: 0o1777, mtime });
  p.entry({ name: 'home/lessl', type: 'directory', mode: 0o755, mtime });
  p.entry({ name: 'etc/passwd', mode: 0o644, mtime }, PASSWD);
  p.entry({ name: 'etc/group', mode: 0o644, mtime }, GROUP);
  await addFile(p, 'usr/local/bin/node', process.execPath, mtime);
  for (const lib of libs) await addFile(p, lib.slice(1), lib, mtime);
  p.finalize();
};

/** Makes the image (imported from this machine's files), replacing what its tag named. */
export const importNodeImage = async (images: ImagesClient, req: NodeImageRequest): Promise<void> => {
  const libs = await nodeLibraries();
  const p = pack();
  const filling = fillRootfs(p, libs).catch((err: unknown) => {
    p.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  });
  const labels = { ...req.labels, [NODE_VERSION_LABEL]: process.version };
  const changes = ['ENV PATH=/usr/local/bin', 'ENTRYPOINT ["/usr/local/bin/node"]', ...labelChanges(labels)];
  const s = await images.import(p, { repo: req.repo, tag: req.tag, changes });
  const r = await followJson(s);
  await filling;
  if (r.error !== undefined) throw new Error(r.error);
};

/**
 * The image `repo:tag`, made by `importNodeImage` unless the engine has it holding this node
 * already (its `lessl.node-version`); answers the reference. Throws what the engine answers.
 */
export const ensureNodeImage = async (images: ImagesClient, req: NodeImageRequest): Promise<string> => {
  const ref = `${req.repo}:${req.tag}`;
  try {
    const have = await images.inspect(ref);
    if (have.Config.Labels?.[NODE_VERSION_LABEL] === process.version) return ref;
  } catch (err) {
    if (statusOf(err) !== 404) throw err;
  }
  await importNodeImage(images, req);
  return ref;
};
