/**
 * Shared set-up of the examples: a Docker backend and a busybox base image built from local files.
 */
import { pathToFileURL } from 'node:url';
import * as E from 'fp-ts/lib/Either.js';
import { fromUtf8, unwrap, type AnyError, type CommitResult, type Element, type TaskResult } from '@lessl/core';
import { busyboxRootfs, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';

/** The stores the examples use. */
export const EXAMPLE_STORES = [
  { kind: 'image', name: 'local' },
  { kind: 'volume', name: 'local' },
  { kind: 'volume', name: 'tmp', options: { tmpfs: true } },
  // An nfs store: Docker's local driver with nfs options; parents make no sense there.
  {
    kind: 'volume',
    name: 'nfs',
    parents: false,
    options: { driver: 'local', driverOpts: { type: 'nfs', o: 'addr=127.0.0.1,nolock,soft,ro', device: ':/exports/shared' } },
  },
  { kind: 'task', name: 'local' },
  { kind: 'executor', name: 'local' },
] as const;

/** Opens a Docker backend with an in-memory registry (each example starts clean). */
export const openExample = (): Promise<DockerBackend> => unwrap(openDockerBackend({ stores: EXAMPLE_STORES }));

/** The busybox base image, created once per backend. */
export const BASE = 'image://local/busybox';
export const ensureBase = async (lessl: DockerBackend): Promise<Element> => {
  const r = await lessl.stores.image.read(BASE)();
  if (E.isRight(r)) return r.right;
  return unwrap(
    lessl.stores.image.create({ id: BASE, data: busyboxRootfs(), ro: { 'org.lessl.base': new TextEncoder().encode('busybox') } }),
  );
};

const uniq = (): string => Math.random().toString(36).slice(2, 8);
/** A fresh element name, so examples can run repeatedly. */
export const name = (stem: string): string => `${stem}-${uniq()}`;

/** Output of a task result as text. */
export const out = (t: TaskResult | undefined): string => new TextDecoder().decode(t?.stdout ?? new Uint8Array());
/** Error output of a task result as text. */
export const err = (t: TaskResult | undefined): string => new TextDecoder().decode(t?.stderr ?? new Uint8Array());

/**
 * Runs one task to its end on a fresh executor made of `image`, `volumes` and options, the long
 * way (join, bind, commit, wait), to show the composition; then deletes the executor and the
 * task. `lessl.run()` does the same in one call. Answers the commit and the task's result.
 */
export const runTask = async (
  lessl: DockerBackend,
  opts: {
    image?: string;
    volumes?: readonly { id: string; at: string; readOnly?: boolean }[];
    cmd: readonly string[];
    readOnlyRootfs?: boolean;
    limits?: Record<string, number>;
  },
): Promise<{ commit: CommitResult; task: TaskResult | undefined }> => {
  const task = `task://local/${name('t')}`;
  await unwrap(
    lessl.stores.task.create({
      id: task,
      spec: { cmd: [...opts.cmd], ...(opts.limits === undefined ? {} : { limits: opts.limits }) },
    }),
  );
  const c = lessl.composer;
  let h = await unwrap(c.handle(`executor://local/${name('x')}`, { readOnlyRootfs: opts.readOnlyRootfs === true }));
  if (opts.image !== undefined) h = await unwrap(c.join(h, opts.image));
  for (const v of opts.volumes ?? []) h = await unwrap(c.join(h, v.id, { mountpoint: v.at, readOnly: v.readOnly === true }));
  h = await unwrap(c.bind(await unwrap(c.join(h, task)), task));
  const commit = await unwrap(c.commit(h));
  // the commit started the task; wait for its end
  const result = commit.committed ? await unwrap(lessl.tasks.wait(task)) : undefined;
  if (commit.committed) {
    // the task has ended: leave everything (from a fresh handle: the end moved the executor on), then remove the executor and the task
    let done = await unwrap(c.handle(h.executor));
    for (const m of done.members) done = await unwrap(c.leave(done, m.id));
    await unwrap(c.commit(done));
    await unwrap(lessl.stores.executor.delete(h.executor));
  }
  await unwrap(lessl.stores.task.delete(task));
  return { commit, task: result };
};

/** Prints a value as indented JSON (bytes as UTF-8). */
export const show = (label: string, v: unknown): void => {
  console.log(
    `${label}:`,
    JSON.stringify(v, (_k, x: unknown) => (x instanceof Uint8Array ? new TextDecoder().decode(x) : x), 2),
  );
};

/** Runs `run` when the module is the entry point, with a fresh backend; prints its outcome. */
export const main = (meta: ImportMeta, run: (l: DockerBackend) => Promise<unknown>): void => {
  if (process.argv[1] === undefined || meta.url !== pathToFileURL(process.argv[1]).href) return;
  void (async () => {
    let lessl: DockerBackend | undefined;
    try {
      lessl = await openExample();
      show('outcome', await run(lessl));
    } catch (e) {
      const le = (e as { error?: AnyError }).error;
      console.error('failed:', le === undefined ? e : `${le._tag}: ${le.message}`);
      process.exitCode = 1;
    } finally {
      if (lessl !== undefined) {
        await lessl.close();
        await purge(lessl.docker, lessl.instanceId); // the registry was in memory: remove what it made
      }
    }
  })();
};

export { fromUtf8 };
