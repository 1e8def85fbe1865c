/**
 * Volumes: fresh (volume create), from a parent volume (content copied with the archive API
 * through helper containers that are created but never started), with data (a tar put through
 * a helper), nfs (local driver with nfs options; parents refused by the store), non-persistent
 * (local driver on tmpfs). Size requests are honoured only where the driver can (tmpfs).
 *
 * Store options (`StoreConfig.options`): `{ driver?: string, driverOpts?: Record<string,string>, tmpfs?: boolean }`.
 * Create options: `{ tmpfs?: boolean, sizeBytes?: number }`.
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import { invalidEntry, unsupported, type AnyError, type CreateError, type Element } from '@lessl/core';
import type { DriverCreated, DriverCreateInput, ElementDriver, Intent } from '@lessl/kit';
import { volumeNameOf } from './attributes.js';
import { createErrorOf, messageOf } from './driver-errors.js';
import type { Host } from './host.js';
import { labelsFor, volumeUsersFilter } from './labels.js';
import { withTar } from './streams.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { volumeName } from './names.js';
import { foreignReferences, removeOwned } from './removal.js';
import { checkedTar } from './tar.js';

/** The store options a volume driver reads (`StoreConfig.options`), each field checked on its own. */
const DriverOptsC = t.record(t.string, t.string);

/** The Docker volume a create asks for: its driver, driver options and size. */
interface VolumePlan {
  readonly driver: string;
  readonly driverOpts: Record<string, string>;
  readonly tmpfs: boolean;
  readonly size: number | undefined;
}

/** Phase 1: reads the store's and the create's options into a plan, or refuses what cannot be honoured. */
const plan = (input: DriverCreateInput): E.Either<CreateError, VolumePlan> => {
  const id = input.id.key;
  const so: Readonly<Record<string, unknown>> = input.store.options ?? {};
  const tmpfs = so.tmpfs === true || input.options.tmpfs === true;
  const size = input.options.sizeBytes;
  if (size !== undefined && (typeof size !== 'number' || !Number.isInteger(size) || size <= 0))
    return E.left(invalidEntry('sizeBytes must be a positive integer', id, ['options.sizeBytes']));
  if (size !== undefined && !tmpfs)
    return E.left(
      unsupported(
        id,
        'volume size limits',
        "Docker's local volume driver cannot limit or reserve a volume's size; use a tmpfs volume or a driver with quotas",
      ),
    );
  if (tmpfs && (input.data !== undefined || input.parent !== undefined))
    return E.left(unsupported(id, 'content for a non-persistent volume', 'a tmpfs volume starts empty at every mount'));
  const driverOpts: Record<string, string> = tmpfs
    ? { type: 'tmpfs', device: 'tmpfs', ...(size === undefined ? {} : { o: `size=${size}` }) }
    : DriverOptsC.is(so.driverOpts)
      ? so.driverOpts
      : {};
  return E.right({ driver: t.string.is(so.driver) ? so.driver : 'local', driverOpts, tmpfs, size });
};

/** What the element records of its volume. */
const attributesOf = (name: string, p: VolumePlan): DriverCreated['attributes'] => ({
  volumeName: name,
  driver: p.driver,
  tmpfs: p.tmpfs,
  ...(p.size === undefined ? {} : { sizeBytes: p.size }),
  ...(p.driver === 'local' && !p.tmpfs && Object.keys(p.driverOpts).length > 0 ? { driverOpts: p.driverOpts } : {}),
});

/** A Docker failure while putting content in: an archive Docker could not unpack is the data's fault. */
const unpackError = (id: string, err: unknown): AnyError =>
  statusOf(err) === 400 || statusOf(err) === 500
    ? invalidEntry(`Docker could not unpack the data: ${messageOf(err)}`, id, ['data'])
    : fromDocker(id, err);

/**
 * Putting a new volume's content in (a copy of its parent, then its data) through never-started
 * helper containers, removed before `fill` answers so the volume can be removed on failure (and
 * the helper image with them when no other fill on this engine uses it).
 */
/** Fills a new volume through helper containers. */
interface VolumeHelpers {
  fill(input: DriverCreateInput, name: string): Promise<E.Either<CreateError, void>>;
}

const volumeHelpers = (engine: Host): VolumeHelpers => {
  const containers = engine.clients.containers;
  /** Copies the parent volume's content into the new one. */
  const copyParent = async (id: string, from: string, name: string, helpers: string[]): Promise<void> => {
    const src = await engine.helper(id, [{ Source: from, Target: '/v', ReadOnly: true }]);
    helpers.push(src);
    const dst = await engine.helper(id, [{ Source: name, Target: '/v' }]);
    helpers.push(dst);
    const archive = await containers.getArchive(src, '/v');
    // the copy streams from one call into another: a read cut mid-way fails the create, not the process
    await withTar(archive, (signal) => containers.putArchive(dst, archive, '/', { signal }), engine.liveness);
  };

  /** Puts the create's data (a checked tar) into the new volume, then checks its checksum. */
  const putData = async (
    input: DriverCreateInput,
    data: NonNullable<DriverCreateInput['data']>,
    name: string,
    helpers: string[],
  ): Promise<E.Either<CreateError, void>> => {
    const id = input.id.key;
    const dst = await engine.helper(id, [{ Source: name, Target: '/v' }]);
    helpers.push(dst);
    const tar = checkedTar(id, data.stream, { absoluteSymlinks: false });
    try {
      await withTar(tar, (signal) => containers.putArchive(dst, tar, '/v', { signal }), engine.liveness);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(createErrorOf(unpackError(id, err)));
    }
    const v = data.verify();
    return E.isLeft(v) ? v : E.right(undefined);
  };

  const fill = async (input: DriverCreateInput, name: string): Promise<E.Either<CreateError, void>> => {
    const id = input.id.key;
    const helpers: string[] = [];
    try {
      if (input.parent !== undefined) await copyParent(id, volumeNameOf(input.parent), name, helpers);
      if (input.data === undefined) return E.right(undefined);
      return await putData(input, input.data, name, helpers);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(createErrorOf(fromDocker(id, err)));
    } finally {
      for (const h of helpers) await engine.removeQuietly(h);
    }
  };

  return { fill };
};

/** One volume create: the engine, the request and the Docker volume's name. */
interface VolumeJob {
  readonly engine: Host;
  readonly helpers: VolumeHelpers;
  readonly input: DriverCreateInput;
  readonly name: string;
}

/** Phase 2: makes the Docker volume (a volume of that name that exists already is refused). */
const makeVolume = async ({ engine, input, name }: VolumeJob, p: VolumePlan): Promise<E.Either<CreateError, void>> => {
  const id = input.id.key;
  try {
    const volumes = engine.clients.volumes;
    const existing = await volumes.inspect(name).catch(() => undefined);
    if (existing !== undefined) return E.left(invalidEntry(`a Docker volume named ${name} exists already`, id, ['id']));
    await volumes.create({
      Name: name,
      Driver: p.driver,
      DriverOpts: p.driverOpts,
      Labels: labelsFor(engine.instance, input.id, input.ro),
    });
    return E.right(undefined);
  } catch (err) {
    return E.left(createErrorOf(fromDocker(id, err, 'NameCollision')));
  }
};

/** A volume create: the plan, the volume, its content (the volume goes again when filling it fails). */
const createVolume = async (job: VolumeJob): Promise<E.Either<CreateError, DriverCreated>> => {
  const { engine, helpers, input, name } = job;
  const p = plan(input);
  if (E.isLeft(p)) return p;
  const made = await makeVolume(job, p.right);
  if (E.isLeft(made)) return made;
  const filled = await engine.withHelperImage(() => helpers.fill(input, name));
  if (E.isLeft(filled)) {
    await engine.removeObject('volume', name);
    return filled;
  }
  return E.right({ attributes: attributesOf(name, p.right) });
};

/** The volume driver. */
export const volumeDriver = (engine: Host): ElementDriver => {
  const volumes = engine.clients.volumes;
  const helpers = volumeHelpers(engine);
  return {
    external: true,
    supportsData: true,
    async create(input) {
      const name = volumeName(engine.instance, input.id);
      try {
        return await createVolume({ engine, helpers, input, name });
      } catch (err) {
        await engine.removeObject('volume', name);
        throw err;
      }
    },
    destroy(el: Element) {
      const name = volumeNameOf(el);
      engine.expected.add(name);
      return removeOwned(engine, { key: el.id.key, users: volumeUsersFilter(name), remove: () => volumes.remove(name) });
    },
    references: (el: Element) => foreignReferences(engine, el.id.key, volumeUsersFilter(volumeNameOf(el))),
    async recover(intent: Intent): Promise<void> {
      engine.recovered.push(...(await engine.removeHelpers(intent.id)));
      for (const v of await volumes.listOf(intent.id).catch(() => [])) {
        engine.recovered.push(`volume ${v.Name}`);
        await engine.removeObject('volume', v.Name);
      }
    },
  };
};
