/**
 * Docker names of lessl elements (labels: labels.ts). Names include a hash of the registry instance and
 * the element ID, so two registries on one engine never share an object.
 */
import { createHash } from 'node:crypto';
import type { ElementId } from '@lessl/core';

const hash = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 12);
const safe = (s: string, max: number): string =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, max) || 'x';

/** Labels live in labels.ts; re-exported here for the drivers that import them from names.js. */
export { LABEL, labelChanges, labelsFor, roLabelValue } from './labels.js';

/** `lessl/<store>:<name>-<hash>` */
export const imageRef = (instance: string, id: ElementId): string =>
  `lessl/${safe(id.store, 60)}:${safe(id.name, 100)}-${hash(instance + id.key)}`;
/** `lessl_<store>_<name>_<hash>` */
export const volumeName = (instance: string, id: ElementId): string =>
  `lessl_${safe(id.store, 40)}_${safe(id.name, 80)}_${hash(instance + id.key)}`;
/** `lessl_x_<name>_<hash>_<run>` */
export const containerName = (instance: string, id: ElementId, run: string): string =>
  `lessl_${safe(id.store, 40)}_${safe(id.name, 80)}_${hash(instance + id.key)}_${run}`;
