/**
 * Volumes: fresh (volume create), from a parent volume (content copied with the archive API
 * through helper containers that are created but never started), with data (a tar put through
 * a helper), nfs (local driver with nfs options; parents refused by the store), non-persistent
 * (local driver on tmpfs). Size requests are honoured only where the driver can (tmpfs).
 *
 * Store options (`StoreConfig.options`): `{ driver?: string, driverOpts?: Record<string,string>, tmpfs?: boolean }`.
 * Create options: `{ tmpfs?: boolean, sizeBytes?: number }`.
 */
import type Docker from 'dockerode';
import * as E from 'fp-ts/lib/Either.js';
import { invalidEntry, unsupported, type CreateError, type DeleteError, type Element } from '@lessl/core';
import type { DriverCreated, DriverCreateInput, ElementDriver, Intent } from '@lessl/level';
import { withTar, type Engine } from './engine.js';
import { fromDocker, isDockerError, statusOf } from './errors.js';
import { LABEL, labelsFor, volumeName } from './names.js';
import { checkedTar } from './tar.js';

/** The volume driver. */
export const volumeDriver = (engine: Engine): ElementDriver => {
  const d = engine.docker;

  const removeVolume = async (name: string): Promise<void> => {
    await engine.removeObject('volume', name);
  };

  /**
   * Puts a new volume's content in (a copy of its parent, then its data) through never-started
   * helper containers, removed before this answers so the volume can be removed on failure (and
   * the helper image with them when no other fill on this engine uses it).
   */
  const fill = (input: DriverCreateInput, name: string): Promise<E.Either<CreateError, void>> =>
    engine.withHelperImage(() => fillThroughHelpers(input, name));

  const fillThroughHelpers = async (input: DriverCreateInput, name: string): Promise<E.Either<CreateError, void>> => {
    const id = input.id.key;
    const helpers: Docker.Container[] = [];
    try {
      if (input.parent !== undefined) {
        const from = String(input.parent.attributes.volumeName ?? '');
        const src = await engine.helperContainer(id, [{ Source: from, Target: '/v', ReadOnly: true }]);
        helpers.push(src);
        const dst = await engine.helperContainer(id, [{ Source: name, Target: '/v' }]);
        helpers.push(dst);
        const archive = await src.getArchive({ path: '/v' });
        // the copy streams from one call into another: a read cut mid-way fails the create, not the process
        await withTar(archive, (abortSignal) => dst.putArchive(archive, { path: '/', abortSignal }), engine.liveness);
      }
      if (input.data === undefined) return E.right(undefined);
      const dst = await engine.helperContainer(id, [{ Source: name, Target: '/v' }]);
      helpers.push(dst);
      const tar = checkedTar(id, input.data.stream, { absoluteSymlinks: false });
      try {
        await withTar(
          tar,
          (abortSignal) => dst.putArchive(tar as unknown as NodeJS.ReadableStream, { path: '/v', abortSignal }),
          engine.liveness,
        );
      } catch (err) {
        if (!isDockerError(err)) throw err;
        return E.left(
          statusOf(err) === 400 || statusOf(err) === 500
            ? invalidEntry(`Docker could not unpack the data: ${(err as Error).message}`, id, ['data'])
            : (fromDocker(id, err) as CreateError),
        );
      }
      const v = input.data.verify();
      return E.isLeft(v) ? v : E.right(undefined);
    } catch (err) {
      if (!isDockerError(err)) throw err;
      return E.left(fromDocker(id, err) as CreateError);
    } finally {
      for (const h of helpers) await engine.removeQuietly(h);
    }
  };

  const createInner = async (input: DriverCreateInput, name: string): Promise<E.Either<CreateError, DriverCreated>> => {
    const id = input.id.key;
    const so = (input.store.options ?? {}) as { driver?: unknown; driverOpts?: unknown; tmpfs?: unknown };
    const o = input.options as { tmpfs?: unknown; sizeBytes?: unknown };
    const tmpfs = so.tmpfs === true || o.tmpfs === true;
    const size = o.sizeBytes;
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
      : ((so.driverOpts as Record<string, string> | undefined) ?? {});
    const driver = typeof so.driver === 'string' ? so.driver : 'local';
    try {
      const existing = await d
        .getVolume(name)
        .inspect()
        .catch(() => undefined);
      if (existing !== undefined) return E.left(invalidEntry(`a Docker volume named ${name} exists already`, id, ['id']));
      await d.createVolume({
        Name: name,
        Driver: driver,
        DriverOpts: driverOpts,
        Labels: labelsFor(engine.instance, input.id, input.ro),
      });
    } catch (err) {
      return E.left(fromDocker(id, err, 'NameCollision') as CreateError);
    }
    const filled = await fill(input, name);
    if (E.isLeft(filled)) {
      await removeVolume(name);
      return filled;
    }
    return E.right({
      attributes: {
        volumeName: name,
        driver,
        tmpfs,
        ...(size === undefined ? {} : { sizeBytes: size }),
        ...(driver === 'local' && !tmpfs && Object.keys(driverOpts).length > 0 ? { driverOpts } : {}),
      },
    });
  };

  return {
    external: true,
    supportsData: true,
    async create(input) {
      const name = volumeName(engine.instance, input.id);
      try {
        return await createInner(input, name);
      } catch (err) {
        await removeVolume(name);
        throw err;
      }
    },
    async destroy(el: Element): Promise<E.Either<DeleteError, void>> {
      const name = String(el.attributes.volumeName ?? '');
      engine.expected.add(name);
      const remove = (): Promise<unknown> => d.getVolume(name).remove();
      try {
        // a helper of lessl's whose removal failed earlier may still mount the volume: it goes first
        await remove().catch(async (err: unknown) => {
          if (statusOf(err) === 409 && (await engine.removeOwnHelpers({ volume: [name] }))) return remove();
          throw err;
        });
        return E.right(undefined);
      } catch (err) {
        if (statusOf(err) === 404) return E.right(undefined);
        if (statusOf(err) === 409)
          return E.left(fromDocker(el.id.key, err, 'InUse', await engine.users({ volume: [name] })) as DeleteError);
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async references(el: Element): Promise<E.Either<DeleteError, readonly string[]>> {
      const name = String(el.attributes.volumeName ?? '');
      try {
        return E.right(await engine.foreignUsers({ volume: [name] }));
      } catch (err) {
        return E.left(fromDocker(el.id.key, err) as DeleteError);
      }
    },
    async recover(intent: Intent): Promise<void> {
      engine.recovered.push(...(await engine.removeHelpers(intent.id)));
      const vols = await d
        .listVolumes({ filters: { label: [`${LABEL.id}=${intent.id}`, `${LABEL.registry}=${engine.instance}`] } })
        .catch(() => ({ Volumes: [] }));
      for (const v of vols.Volumes ?? []) {
        engine.recovered.push(`volume ${v.Name}`);
        await engine.removeObject('volume', v.Name);
      }
    },
  };
};
