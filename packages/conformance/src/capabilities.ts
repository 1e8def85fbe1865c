/**
 * How the suite learns what the backend under test supports: from the backend itself
 * (`Backend.supports`, the capability manifest), and for a backend that answers none from the
 * deprecated hand-typed `SuiteOptions.supports`.
 */
import type { Capabilities } from '@lessl/core';
import type { Case, SuiteOptions, TestBackend } from './types.js';

/** What the suite ran on every backend before the manifest: assumed of a backend that answers none. */
const RAN_ALWAYS = { tasks: true, daemons: true, restartPolicies: true, credentials: true } as const;

/** Features a backend that answers no manifest is not taken to have (no case assumed them). */
const NOT_ASSUMED = {
  execIntoRunning: false,
  hosts: false,
  swarm: false,
  pool: false,
  warmAgent: false,
  imageSources: false,
  ports: false,
} as const;

/** What the suite takes of a backend that answers no manifest and is given no `supports` option. */
const ASSUMED: Capabilities = { parents: true, data: true, reopen: true, ...RAN_ALWAYS, ...NOT_ASSUMED };

/** The names of every capability, as a complete manifest has them. */
export const CAPABILITY_NAMES: readonly string[] = Object.keys(ASSUMED);

/** The backend's manifest; for a backend without one, the deprecated option over `ASSUMED`. */
export const capabilitiesOf = (o: SuiteOptions, l: TestBackend): Capabilities => {
  if (l.supports !== undefined) return l.supports;
  const s = o.supports;
  return s === undefined ? ASSUMED : { ...ASSUMED, parents: s.parents, data: s.data, reopen: s.reopen };
};

/** Whether the factory honours `failStep`: the option, else the deprecated `supports.faultInjection`. */
export const faultInjection = (o: SuiteOptions): boolean => o.faultInjection ?? o.supports?.faultInjection ?? false;

/** The capabilities a case can need. */
export type Capability = keyof Capabilities;

/**
 * `c`, run only on a backend that supports `need` (read from its manifest when the case runs);
 * on another it passes at once: the manifest cases check that such a backend refuses the feature.
 */
export const needs = (o: SuiteOptions, need: Capability, c: Case): Case => ({
  ...c,
  fn: async (l) => {
    if (capabilitiesOf(o, l)[need]) await c.fn(l);
  },
});
