/**
 * Issue 15, item 3, for the Docker backend's own calls: `purge`, `preload`, `refresh`,
 * `exportImage`, `hosts.drain` and `pool.configure` decode their options object and call
 * context exactly. A misspelt key is InvalidEntry naming it, and the call does nothing.
 */
import Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { unwrap, type AnyError } from '@lessl/core';
import { busyboxRootfsBytes, openDockerBackend, purge, type DockerBackend } from '@lessl/docker';
import { n } from './support.js';

const docker = new Docker();
let l: DockerBackend;
let image: string;

beforeAll(async () => {
  l = await unwrap(openDockerBackend({ watch: false }));
  image = `image://local/${n('opt')}`;
  await unwrap(l.stores.image.create({ id: image, data: await busyboxRootfsBytes() }));
});

afterAll(async () => {
  await l.close();
  await purge(docker, l.instanceId);
});

/** The keys of the InvalidEntry `te` answers (fails the test on anything else). */
const refusedKeys = async (te: TaskEither<AnyError, unknown>): Promise<readonly string[]> => {
  const r = await te();
  expect(E.isLeft(r) && r.left._tag).toBe('InvalidEntry');
  return E.isLeft(r) && r.left._tag === 'InvalidEntry' ? r.left.keys : [];
};

describe("the Docker backend's own calls take exact options", () => {
  test('a misspelt key is InvalidEntry naming it, and nothing happens', async () => {
    const seq = l.events.lastSeq();
    expect(await refusedKeys(l.purge({ unusedFor: 0 } as never))).toEqual(['unusedFor']);
    expect(await refusedKeys(l.purge({ dryRun: 'yes' } as never))).toEqual(['dryRun']);
    expect(await refusedKeys(l.purge({ unusedForMs: 0 }, { principle: 'ann' } as never))).toEqual(['principle']);
    expect(await refusedKeys(l.preload([image], { host: ['local'] } as never))).toEqual(['host']);
    expect(await refusedKeys(l.refresh(image, { principle: 'ann' } as never))).toEqual(['principle']);
    expect(await refusedKeys(l.exportImage(image, { principle: 'ann' } as never))).toEqual(['principle']);
    expect(await refusedKeys(l.hosts.drain('local', { deadline: 0 } as never))).toEqual(['deadline']);
    expect(await refusedKeys(l.pool.configure([], { memoryCap: 1 } as never))).toEqual(['memoryCap']);
    // nothing happened: the image is there, no event, the host still takes work
    expect((await unwrap(l.stores.image.read(image))).revision).toBe(1);
    expect(l.events.lastSeq()).toBe(seq);
    expect(l.hosts.list().map((h) => h.state)).toEqual(['active']);
    // the right keys work
    const report = await unwrap(l.purge({ unusedForMs: 3_600_000, dryRun: true }));
    expect(report).toBeDefined();
  });
});
