/**
 * Placement: which host gets a new executor (docs/hosts.md). Pure and allocation-light, so one
 * decision over a thousand hosts stays well under a millisecond (`npm run bench:hosts`).
 *
 * 1. Filter: the host is `active`; it has a slot left (`capacity.slots`) and memory left
 *    (`capacity.memoryBytes`) for the executor's memory limit; its labels match every label
 *    constraint; it is the host the executor must run on when one is required (the volumes it
 *    mounts live there, or the caller pinned it). The owner rule: a host carrying the reserved
 *    label `lessl.owner` (`OWNER_LABEL`) takes only executors of that same owner; hosts without it
 *    are shared. A host owned by someone else is left out silently (not named among the refusals).
 * 2. Score (lower is better): the host's load, the larger of its used share of slots and of
 *    memory (where `capacity` sets no limit, the engine's own CPUs x 4 slots and memory total
 *    count as full), plus a penalty of 0.1 when the image is not there yet (a transfer costs
 *    about that much: on a 2-CPU host, one executor's worth of load); the requester's own hosts
 *    come first (`OWN_HOST_BONUS`): a shared host is chosen only when none of theirs can take it.
 * 3. Tie-break: the host name, in code-unit order (deterministic).
 */

/** A host's states (docs/hosts.md): spawned until a health check passes, active, inactive after repeated failures, draining, removed. */
export type HostState = 'spawned' | 'active' | 'inactive' | 'draining' | 'removed';

/** What placement reads of a host. */
export interface PlacementHost {
  readonly name: string;
  readonly state: HostState;
  readonly labels: Readonly<Record<string, string>>;
  /** Limits of the host; an absent field means no limit. */
  readonly capacity: { readonly slots?: number; readonly memoryBytes?: number };
  /** Executors running there and the memory their limits reserve. */
  readonly load: { readonly slots: number; readonly memoryBytes: number };
  /** What the engine reports having (`docker info`), for scoring where `capacity` sets no limit. */
  readonly resources?: { readonly cpus: number; readonly memoryBytes: number } | undefined;
  /** Whether the image (Docker image ID) is present there. */
  hasImage(imageId: string): boolean;
}

/** What an executor asks of its host. */
export interface PlacementRequest {
  /** The memory limit of the executor's container. */
  readonly memoryBytes: number;
  /** Labels the host must carry, with these values. */
  readonly constraints?: Readonly<Record<string, string>>;
  /** The host it must run on (its volumes live there, or the caller pinned it). */
  readonly host?: string;
  /** The Docker image ID of its root filesystem. */
  readonly imageId?: string;
  /** Who the executor belongs to: hosts labelled `lessl.owner` with this value may take it (and are preferred). */
  readonly owner?: string;
}

/** The reserved host label of the owner rule: a host carrying it runs only that owner's executors. */
export const OWNER_LABEL = 'lessl.owner';
/** Subtracted from the score of the requester's own hosts (more than any load): they come first. */
export const OWN_HOST_BONUS = 10;

/** The owner a host's labels name, or undefined for a shared host. */
export const ownerOfHost = (h: Pick<PlacementHost, 'labels'>): string | undefined =>
  Object.prototype.hasOwnProperty.call(h.labels, OWNER_LABEL) ? h.labels[OWNER_LABEL] : undefined;

/** Executors per CPU that count as a full host when scoring a host without a slot capacity. */
export const SLOTS_PER_CPU = 4;
/** Executors that count as a full host when neither a slot capacity nor the CPU count is known. */
const DEFAULT_SOFT_SLOTS = 100;
/** Score added when the image must be transferred first. */
export const IMAGE_MISSING_PENALTY = 0.1;

/** The load of a host between 0 (idle) and 1 (full), as placement scores it. */
export const loadOf = (h: PlacementHost): number => {
  const slots = h.capacity.slots ?? (h.resources === undefined ? DEFAULT_SOFT_SLOTS : h.resources.cpus * SLOTS_PER_CPU);
  const memory = h.capacity.memoryBytes ?? h.resources?.memoryBytes;
  return Math.max(h.load.slots / Math.max(1, slots), memory === undefined ? 0 : h.load.memoryBytes / Math.max(1, memory));
};

/** Why a host was filtered out, or undefined when it may take the request. */
export const refusal = (h: PlacementHost, req: PlacementRequest): string | undefined => {
  if (req.host !== undefined && h.name !== req.host) return `not ${req.host}`;
  const owner = ownerOfHost(h);
  if (owner !== undefined && owner !== req.owner) return 'owned by another';
  if (h.state !== 'active') return h.state;
  if (h.capacity.slots !== undefined && h.load.slots >= h.capacity.slots) return 'no slot left';
  if (h.capacity.memoryBytes !== undefined && h.load.memoryBytes + req.memoryBytes > h.capacity.memoryBytes)
    return 'not enough memory left';
  for (const k in req.constraints) {
    if (!Object.prototype.hasOwnProperty.call(req.constraints, k)) continue;
    if (!Object.prototype.hasOwnProperty.call(h.labels, k) || h.labels[k] !== req.constraints[k])
      return `label ${k} is not ${req.constraints[k] ?? ''}`;
  }
  return undefined;
};

/** The result of a placement: the chosen host, or why each host was refused. */
export type Placement<H extends PlacementHost> =
  { readonly ok: true; readonly host: H } | { readonly ok: false; readonly refused: readonly string[] };

/** Chooses the host for one executor (see the module comment). */
export const place = <H extends PlacementHost>(hosts: Iterable<H>, req: PlacementRequest): Placement<H> => {
  let best: H | undefined;
  let bestScore = Infinity;
  const refused: string[] = [];
  for (const h of hosts) {
    const owner = ownerOfHost(h);
    if (owner !== undefined && owner !== req.owner) continue; // the owner rule: not a candidate, not named
    const why = refusal(h, req);
    if (why !== undefined) {
      if (refused.length < 20) refused.push(`${h.name}: ${why}`);
      continue;
    }
    const score =
      loadOf(h) +
      (req.imageId === undefined || h.hasImage(req.imageId) ? 0 : IMAGE_MISSING_PENALTY) -
      (owner === undefined ? 0 : OWN_HOST_BONUS);
    if (score < bestScore || (score === bestScore && best !== undefined && h.name < best.name)) {
      best = h;
      bestScore = score;
    }
  }
  return best === undefined ? { ok: false, refused } : { ok: true, host: best };
};
