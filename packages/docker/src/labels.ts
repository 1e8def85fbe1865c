/**
 * The one owner of lessl's Docker labels: the keys, the label sets each kind of object is made
 * with, the list filters that find them and the predicates that read them back. Nothing else
 * builds a `lessl.*` label or a `label=` filter by hand.
 */
import type { ElementId, Metadata } from '@lessl/core';

/** Label keys. */
export const LABEL = {
  id: 'lessl.id',
  registry: 'lessl.registry',
  task: 'lessl.task',
  helper: 'lessl.helper',
  pool: 'lessl.pool',
  function: 'lessl.function',
  reaper: 'lessl.reaper',
  roPrefix: 'lessl.ro.',
} as const;

/** Labels as Docker reports them (absent on objects made without any). */
export type Labels = Readonly<Record<string, string>> | undefined | null;

/** A Docker list filter (`{ label: [...] }`, `{ service: [...] }`, ...). */
export type Filters = Readonly<Record<string, readonly string[]>>;

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

/** The labels of an executor's container or service running `task` (its key, or `''` for none). */
export const executorLabels = (instance: string, executorKey: string, task: string): Record<string, string> => ({
  [LABEL.id]: executorKey,
  [LABEL.registry]: instance,
  [LABEL.task]: task,
});

/** The labels of a never-started helper container made for `owner` (an element key). */
export const helperLabels = (instance: string, owner: string): Record<string, string> => ({
  [LABEL.helper]: owner,
  [LABEL.registry]: instance,
});

/** The labels of a warm pool container of `profile`. */
export const poolLabels = (instance: string, profile: string): Record<string, string> => ({
  [LABEL.registry]: instance,
  [LABEL.pool]: profile,
});

/** The labels of a function's container: this registry's, and the function's name and version. */
export const functionLabels = (instance: string, name: string, version: number): Record<string, string> => ({
  [LABEL.registry]: instance,
  [LABEL.function]: `${name}@${version}`,
});

/** The labels of the reaper container of a registry instance's session (not `lessl.registry`: reconciliation leaves it alone). */
export const reaperLabels = (instance: string): Record<string, string> => ({ [LABEL.reaper]: instance });

/** The label of the reaper image (one per engine and node version, shared by every registry). */
export const reaperImageLabel = (): Record<string, string> => ({ [LABEL.reaper]: 'image' });

/** The filter of the reaper containers of a registry instance. */
export const reaperFilter = (instance: string): Filters => ({ label: [`${LABEL.reaper}=${instance}`] });

/** The label of the shared helper image (no registry's: every registry on an engine uses it). */
export const helperImageLabel = (): Record<string, string> => ({ [LABEL.helper]: 'image' });

/**
 * The label an image committed from a helper container is made with: `lessl.helper` blanked (the
 * engine keeps it, empty), so neither the image nor a container made from it passes for a helper.
 */
export const notAHelper = (): Record<string, string> => ({ [LABEL.helper]: '' });

/** Dockerfile `LABEL` changes for import/commit. */
export const labelChanges = (labels: Readonly<Record<string, string>>): string[] =>
  Object.entries(labels).map(([k, v]) => `LABEL ${JSON.stringify(k)}=${JSON.stringify(v)}`);

/** The filter of every object a registry instance made. */
export const ownedFilter = (instance: string): Filters => ({ label: [`${LABEL.registry}=${instance}`] });

/** The filter of the objects of one element (its key) made by a registry instance. */
export const elementFilter = (instance: string, key: string): Filters => ({
  label: [`${LABEL.id}=${key}`, `${LABEL.registry}=${instance}`],
});

/** The filter of the helper containers made for `owner` by a registry instance. */
export const helperFilter = (instance: string, owner: string): Filters => ({
  label: [`${LABEL.helper}=${owner}`, `${LABEL.registry}=${instance}`],
});

/** The filter of the containers that use a volume (by name). */
export const volumeUsersFilter = (volume: string): Filters => ({ volume: [volume] });

/** The filter of the containers made from an image (by ID or reference). */
export const imageUsersFilter = (image: string): Filters => ({ ancestor: [image] });

/** What the labels of an object say about it (all `undefined` when they are not lessl's). */
export interface LabelView {
  /** The registry instance that made it. */
  readonly registry: string | undefined;
  /** The element it belongs to (inherited by a child image and by containers made from it). */
  readonly owner: string | undefined;
  /** The element a helper container was made for (`image` for the shared helper image); an empty label is none. */
  readonly helperOf: string | undefined;
  /** The task an executor container runs (`''` for none). */
  readonly task: string | undefined;
  /** The warm pool profile of a pool container. */
  readonly pool: string | undefined;
}

/** A label's value, an empty one as absent. */
const nonEmpty = (v: string | undefined): string | undefined => (v === '' ? undefined : v);

/** Reads lessl's labels of an object. */
export const readLabels = (labels: Labels): LabelView => ({
  registry: labels?.[LABEL.registry],
  owner: labels?.[LABEL.id],
  helperOf: nonEmpty(labels?.[LABEL.helper]), // blanked on an image committed from a helper (`notAHelper`)
  task: labels?.[LABEL.task],
  pool: labels?.[LABEL.pool],
});

/** True when a registry instance made the object. */
export const isOwnedBy = (labels: Labels, instance: string): boolean => readLabels(labels).registry === instance;

/** True for a helper container of a registry instance (never a user anyone should be told about). */
export const isHelperOf = (labels: Labels, instance: string): boolean =>
  isOwnedBy(labels, instance) && readLabels(labels).helperOf !== undefined;

/** True for an executor or warm pool container of a registry instance (a user through its composition). */
export const isExecutorOf = (labels: Labels, instance: string): boolean => {
  const l = readLabels(labels);
  return l.registry === instance && (l.task !== undefined || l.pool !== undefined);
};
