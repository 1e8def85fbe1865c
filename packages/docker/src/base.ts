/**
 * A small base root filesystem built from local files: `/bin/busybox` (Debian's busybox-static)
 * and a symlink per applet, as a tar stream ready for `stores.image.create({ data })`.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import { pack } from 'tar-stream';

/** Where Debian's busybox-static puts the binary. */
export const BUSYBOX = '/bin/busybox';

/** True when a static busybox is installed. */
export const hasBusybox = (path = BUSYBOX): boolean => existsSync(path);

/** A tar stream of a busybox root filesystem (bin/, tmp/, etc/, data/...). */
export const busyboxRootfs = (path = BUSYBOX): Readable => {
  const applets = execFileSync(path, ['--list'])
    .toString()
    .trim()
    .split('\n')
    .filter((a) => a !== '' && a !== 'busybox');
  const p = pack();
  for (const dir of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'data', 'opt', 'root', 'var'])
    p.entry({ name: `${dir}/`, type: 'directory', mode: dir === 'tmp' ? 0o1777 : 0o755 });
  p.entry({ name: 'bin/busybox', mode: 0o755 }, readFileSync(path));
  for (const a of applets) p.entry({ name: `bin/${a}`, type: 'symlink', linkname: 'busybox' });
  p.entry({ name: 'etc/passwd', mode: 0o644 }, 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n');
  p.entry({ name: 'etc/group', mode: 0o644 }, 'root:x:0:\nnogroup:x:65534:\n');
  p.finalize();
  return p;
};

/** The same tar, fully read into memory. */
export const busyboxRootfsBytes = async (path = BUSYBOX): Promise<Uint8Array> => {
  const parts: Uint8Array[] = [];
  for await (const c of busyboxRootfs(path)) if (c instanceof Uint8Array) parts.push(c);
  return Buffer.concat(parts);
};
