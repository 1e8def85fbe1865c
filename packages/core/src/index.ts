/**
 * @lessl/core: the contracts every lessl backend implements.
 * @packageDocumentation
 */
export * from './id.js';
export * from './errors.js';
export * from './metadata.js';
export * from './element.js';
export * from './checksum.js';
export * from './filter.js';
export * from './store.js';
export * from './composition.js';
export * from './events.js';
export * from './task.js';
export * from './tasks.js';
export * from './functions.js';
export * from './options.js';
export * from './capabilities.js';
export * from './logger.js';
export * from './promise.js';
export { jsonData, safeShow } from './safe.js';
export * from './pipeable.js';
export * from './pool-view.js';
export * from './unknown.js';
