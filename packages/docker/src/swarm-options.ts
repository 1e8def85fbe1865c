/**
 * The options of the Swarm driver: the backend's `swarm` option and a Swarm executor's backend
 * options (docs/swarm.md).
 */
import * as E from 'fp-ts/lib/Either.js';
import * as t from 'io-ts';
import type { ExecutorOptions } from '@lessl/core';
import { DockerExecutorOptionsC } from './executor-settings.js';
import { HostSpecC } from './hosts.js';

/** A Swarm placement constraint: `field==value` or `field!=value` (`node.hostname==s2`). */
const ConstraintC = t.refinement(t.string, (c) => /^[\w.-]+\s*(==|!=)\s*\S+$/.test(c), 'Constraint');

/**
 * io-ts codec of the `swarm` option of `openDockerBackend`:
 * - `registry`: `host:port` of the registry every node pulls images from;
 * - `enginesSetNoNewPrivileges`: every node's engine runs with `"no-new-privileges": true` (Swarm
 *   on API 1.41 cannot ask for it per service, and `docker info` does not say it). Without it, an
 *   executor must allow new privileges explicitly (`options.backend.allowNewPrivileges`);
 * - `nodes`: the engines of the worker nodes (`{ name, url, tls? }`, as a host of `hosts`): deleting
 *   an image removes the copies those nodes pulled through them (Swarm has no call for it);
 * - `constraints`: placement constraints of every task's service (e.g. `node.role==worker`), before
 *   an executor's own `constraints`.
 */
export const SwarmOptionsC = t.exact(
  t.intersection([
    t.type({ registry: t.refinement(t.string, (r) => /^[a-z0-9.-]+(:\d+)?$/i.test(r), 'Registry') }),
    t.partial({
      enginesSetNoNewPrivileges: t.boolean,
      nodes: t.array(
        t.exact(
          t.intersection([
            t.type({ name: HostSpecC.type.types[0].props.name, url: HostSpecC.type.types[1].props.url }),
            t.partial({ tls: HostSpecC.type.types[1].props.tls }),
          ]),
        ),
      ),
      constraints: t.array(ConstraintC),
    }),
  ]),
);
/** A Swarm node's engine (`swarm.nodes`): where the copies it pulled are removed. */
export type SwarmNode = NonNullable<t.TypeOf<typeof SwarmOptionsC>['nodes']>[number];
/** Run executors as Swarm services (see `SwarmOptionsC`). */
export type SwarmOptions = t.TypeOf<typeof SwarmOptionsC>;

/**
 * io-ts codec of a Swarm executor's backend options: the container driver's, plus `constraints`,
 * Swarm placement constraints added to the service (e.g. `node.hostname==s2`).
 */
export const SwarmExecutorOptionsC = t.partial({
  ...DockerExecutorOptionsC.props,
  constraints: t.array(ConstraintC),
});
/** Backend options of a Swarm executor (`ExecutorOptions.backend`). */
export type SwarmExecutorOptions = t.TypeOf<typeof SwarmExecutorOptionsC>;

/** The placement constraints an executor asks for (validated at `handle`). */
export const constraintsOf = (o: ExecutorOptions): string[] => {
  const r = SwarmExecutorOptionsC.decode(o.backend ?? {});
  return E.isRight(r) ? [...(r.right.constraints ?? [])] : [];
};
