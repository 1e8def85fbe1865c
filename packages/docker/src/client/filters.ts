/** Merging Docker list filters (a registry's own label filter with a caller's). */
import type { Filters } from '../labels.js';

/** `a` and `b` together: their `label` lists joined, other keys from both (`b` wins). */
export const mergeFilters = (a: Filters, b: Filters = {}): Record<string, string[]> => {
  const out: Record<string, string[]> = {};
  for (const [k, v] of Object.entries(a)) out[k] = [...v];
  for (const [k, v] of Object.entries(b)) out[k] = k === 'label' ? [...(out[k] ?? []), ...v] : [...v];
  return out;
};
