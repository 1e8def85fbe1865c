/**
 * The engine module of old, kept for the drivers that import from it: the host (host.ts), the
 * call guard (guard.ts) and Docker's streams (streams.ts) now live in their own modules.
 */
import { Host } from './host.js';

export { followJson, watchStall, withTar, type Liveness } from './streams.js';
export { CallGuard, DEFAULT_CALL_TIMEOUT_MS, endpointOf, type CallObserver } from './guard.js';
export { HELPER_IMAGE, Host, imageLabel, LOCAL_HOST, type HelperMount, type HostSettings, type WarmContainers } from './host.js';

/** @deprecated A host is a `Host` (host.ts): its clients, health and load. */
export const Engine = Host;
/** @deprecated A host is a `Host` (host.ts). */
export type Engine = Host;
