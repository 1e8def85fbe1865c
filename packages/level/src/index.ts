/**
 * @lessl/level: the registry on `level` (element records, references, revisions, compositions,
 * intents, task output and the durable event log), implementing the kit's `RegistryPort`.
 *
 * It also re-exports `@lessl/kit` (the stores, composer and driver interfaces moved there): that
 * re-export is deprecated, import them from `@lessl/kit`.
 * @packageDocumentation
 */
export * from './registry.js';
export * from './open.js';
export * from '@lessl/kit';
