/**
 * How a backend opens its registry: the `registry` open option (an open `Registry`, a location,
 * memory, or a level database) and `openRegistry`.
 */
import * as t from 'io-ts';
import {
  instanceC,
  type Authorizer,
  type CredentialResolver,
  type FunctionAuthorizer,
  type Logger,
  type StoreConfig,
} from '@lessl/core';
import { kitOpenOptions, type Durability } from '@lessl/kit';
import { Registry, type RegistryOptions, type StringLevel } from './registry.js';

const isLevel = (u: unknown): u is StringLevel =>
  typeof u === 'object' && u !== null && 'open' in u && typeof u.open === 'function';
const levelC = new t.Type<StringLevel, StringLevel, unknown>(
  'AbstractLevel',
  isLevel,
  (u, c) => (isLevel(u) ? t.success(u) : t.failure(u, c)),
  t.identity,
);

/**
 * io-ts codecs of the open options every backend takes (`registry`, `stores`, `authorize`,
 * `credentials`, `outputBytes`, `logger`, `durability`); a backend adds its own and decodes them
 * with `decodeOptions`.
 */
export const commonOpenOptions = {
  registry: t.union([
    instanceC('Registry', Registry),
    t.type({ location: t.string }),
    t.type({ memory: t.literal(true) }),
    t.type({ db: levelC }),
    t.type({}),
  ]),
  ...kitOpenOptions,
};

/**
 * The registry a backend runs on: `given` when it is an open `Registry` (its own durability
 * holds), else one opened from `given` (default: in memory) with `durability` (default `process`).
 */
export const openRegistry = async (
  given: Registry | RegistryOptions | undefined,
  durability: Durability | undefined,
): Promise<Registry> =>
  given instanceof Registry
    ? given
    : Registry.open({ ...(given ?? { memory: true }), ...(durability === undefined ? {} : { durability }) });

/** The open options every backend takes (each backend adds its own). */
export interface CommonOpenOptions {
  /** A registry, or how to open one (default: in memory). */
  readonly registry?: Registry | RegistryOptions;
  /** The store locations (default: the backend's). */
  readonly stores?: readonly StoreConfig[];
  /** Decides `PermissionDenied` (default: everything is allowed). */
  readonly authorize?: Authorizer;
  /** Who may do what with a function (default `functionOwnerRule`: owners, and everyone for public ones). */
  readonly authorizeFunction?: FunctionAuthorizer;
  /** Output kept per task run (default 1 MiB; a spec's `limits.outputBytes` wins). */
  readonly outputBytes?: number;
  /** How durable registry writes are when the backend opens the registry (default `process`; see `Durability`). */
  readonly durability?: Durability;
  /**
   * Resolves `spec.credentials` when a task starts (its `env` and `files` reach the process and
   * nothing else). Without one, binding a task with credentials answers `Unsupported`.
   */
  readonly credentials?: CredentialResolver;
  /**
   * Where the backend reports what it does (open, recovery, task start and end, registry write
   * failures; the Docker backend more): a pino logger or anything with
   * `debug/info/warn/error(obj, msg?)`; never given secrets. Default: none.
   */
  readonly logger?: Logger;
}
