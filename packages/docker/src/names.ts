/**
 * Docker names and labels of lessl elements. Names include a hash of the registry instance and
 * the element ID, so two registries on one engine never share an object.
 */
import { createHash } from 'node:crypto';
import type { ElementId, Metadata } from '@lessl/core';

const hash = (s: string): string => createHash('sha256').update(s).digest('hex').slice(0, 12);
const safe = (s: string, max: number): string =>
  s
    .toLowerCase()
    .replace(/[^a-z0-9_.-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, max) || 'x';

/** Label keys. */
export const LABEL = {
  id: 'lessl.id',
  registry: 'lessl.registry',
  task: 'lessl.task',
  helper: 'lessl.helper',
  pool: 'lessl.pool',
  roPrefix: 'lessl.ro.',
} as const;

/** `lessl/<store>:<name>-<hash>` */
export const imageRef = (instance: string, id: ElementId): string =>
  `lessl/${safe(id.store, 60)}:${safe(id.name, 100)}-${hash(instance + id.key)}`;
/** `lessl_<store>_<name>_<hash>` */
export const volumeName = (instance: string, id: ElementId): string =>
  `lessl_${safe(id.store, 40)}_${safe(id.name, 80)}_${hash(instance + id.key)}`;
/** `lessl_x_<name>_<hash>_<run>` */
export const containerName = (instance: string, id: ElementId, run: string): string =>
  `lessl_${safe(id.store, 40)}_${safe(id.name, 80)}_${hash(instance + id.key)}_${run}`;

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * An ro metadata value as a label value: the text itself when the bytes are UTF-8 without control
 * characters (so `docker ps --filter label=lessl.ro.team=infra` works), else `base64:` and the
 * bytes in base64 (text that starts with `base64:` is encoded too, so the form is never ambiguous).
 */
export const roLabelValue = (v: Uint8Array): string => {
  let s: string | undefined;
  try {
    s = utf8.decode(v);
  } catch {
    s = undefined;
  }
  // eslint-disable-next-line no-control-regex
  if (s !== undefined && !/[\u0000-\u001f\u007f]/.test(s) && !s.startsWith('base64:')) return s;
  return `base64:${Buffer.from(v).toString('base64')}`;
};

/** The labels every object of an element carries; ro metadata as readable values (`roLabelValue`). */
export const labelsFor = (instance: string, id: ElementId, ro: Metadata = {}): Record<string, string> => {
  const out: Record<string, string> = { [LABEL.id]: id.key, [LABEL.registry]: instance };
  for (const [k, v] of Object.entries(ro)) out[`${LABEL.roPrefix}${k}`] = roLabelValue(v);
  return out;
};

/** Dockerfile `LABEL` changes for import/commit. */
export const labelChanges = (labels: Readonly<Record<string, string>>): string[] =>
  Object.entries(labels).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);
