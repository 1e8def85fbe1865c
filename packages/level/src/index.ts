/**
 * @lessl/level: the registry on `level`, and the generic stores and composer every backend
 * plugs its drivers into.
 * @packageDocumentation
 */
export * from './registry.js';
export * from './hub.js';
export * from './lock.js';
export * from './drivers.js';
export { KindStore, storeKey, route, guard, type Wiring } from './stores.js';
export { GenericComposer, fromRecord } from './composer.js';
export * from './backend.js';
export * from './runtime.js';
export { TaskLifecycle } from './tasks.js';
export { makeRun } from './run.js';
export { NO_SECRETS, resolveSecrets, unsupportedField } from './spec.js';
export * from './port.js';
export * from './door.js';
export { teardown, type TeardownParts } from './run.js';
