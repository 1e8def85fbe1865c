/**
 * @lessl/kit: the generic kit every backend plugs its drivers into: the stores, the composer,
 * the task runtime and lifecycle, `run()`, the driver interfaces, and the registry port they
 * talk to (`RegistryPort`) with the one door a backend's own code writes through (`RecordDoor`).
 * @packageDocumentation
 */
export * from './records.js';
export * from './port.js';
export * from './door.js';
export * from './hub.js';
export * from './lock.js';
export * from './drivers.js';
export { KindStore } from './stores.js';
export { storeKey, route, guard, principalOf, type Wiring } from './wiring.js';
export { GenericComposer, fromRecord } from './composer.js';
export * from './backend.js';
export * from './runtime.js';
export { TaskLifecycle } from './tasks.js';
export { makeRun, teardown, type TeardownParts } from './run.js';
export { NO_SECRETS, resolveSecrets, unsupportedField } from './spec.js';
export { FunctionRuntime, FUNCTION_DEFAULTS, type FunctionsOptions } from './functions.js';
export { HeldInput, inputOf, NO_INPUT, pipeInput, readInput } from './input.js';
