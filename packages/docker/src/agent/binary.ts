/**
 * The agent's binary, as `npm run build` made it (packages/docker/agent/lessl-agent, shipped in
 * the package), and the tar that puts it into a container.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type Docker from 'dockerode';
import { pack } from 'tar-stream';

/** Where the agent lives inside a container. */
export const AGENT_PATH = '/.lessl/agent';
/** The agent's file on this machine (run here, too, as a host port forwarder: forward-host.ts). */
export const AGENT_FILE = fileURLToPath(new URL('../../agent/lessl-agent', import.meta.url));

let cached: Buffer | null | undefined;

/** The agent's bytes, or undefined when the build could not make it (no compiler: warm tasks use exec). */
export const agentBinary = (): Buffer | undefined => {
  if (cached === undefined)
    try {
      cached = readFileSync(AGENT_FILE);
    } catch {
      cached = null;
    }
  return cached ?? undefined;
};

/** A tar of `/.lessl/agent` (owned by root, mode 0755) for `putArchive` at `/`. */
export const agentTar = (bin: Buffer): NodeJS.ReadableStream => {
  const p = pack();
  p.entry({ name: '.lessl', type: 'directory', mode: 0o755, uid: 0, gid: 0 });
  p.entry({ name: AGENT_PATH.slice(1), mode: 0o755, uid: 0, gid: 0 }, bin);
  p.finalize();
  return p;
};

/** Linux capability numbers the agent needs to switch users and signal runs. */
const NEEDED: Readonly<Record<string, number>> = { KILL: 5, SETGID: 6, SETUID: 7, SETPCAP: 8 };
/** Docker's default capabilities (when `CapDrop` does not drop `ALL`) include all of `NEEDED`. */
const capName = (c: string): string => c.toUpperCase().replace(/^CAP_/, '');

/**
 * The container's capabilities with what the agent needs added (and no longer dropped by name),
 * and the numbers of the added ones (the agent drops them from every run's bounding set, so a run
 * has exactly the configured ones).
 */
export const agentCapabilities = (hc: Docker.HostConfig): { capAdd: string[]; capDrop: string[]; drop: number[] } => {
  const add = (hc.CapAdd ?? []).map(capName);
  const dropped = (hc.CapDrop ?? []).map(capName);
  const has = (c: string): boolean =>
    hc.Privileged === true || add.includes(c) || (!dropped.includes('ALL') && !dropped.includes(c));
  const missing = Object.keys(NEEDED).filter((c) => !has(c));
  return {
    capAdd: [...(hc.CapAdd ?? []), ...missing],
    capDrop: (hc.CapDrop ?? []).filter((c: string) => !missing.includes(capName(c))),
    drop: missing.map((c) => NEEDED[c] ?? -1).filter((n) => n >= 0),
  };
};
