/**
 * `lessl route add|ls|rm`: shared routes to a port of a task (`/r/<route>/`, reached without a
 * token: whoever holds the URL reaches the daemon).
 */
import type { LesslClient } from './client.js';
import { table, writeJson, type Io } from './commands.js';

/** `lessl route add TASK PORT`: prints the route's full URL (shown once: the service keeps only its hash). */
export const routeAdd = async (c: LesslClient, io: Io, task: string, port: number): Promise<number> => {
  const r = await c.addRoute(task, port);
  const url = `${c.url}${r.url}`;
  if (io.json) writeJson(io, { ...r, url });
  else io.out.write(`${url}\n`);
  return 0;
};

/** `lessl route ls TASK`: the task's routes by handle. */
export const routeLs = async (c: LesslClient, io: Io, task: string): Promise<number> => {
  const rs = await c.listRoutes(task);
  return table(io, rs, ['HANDLE', 'PORT', 'CREATED'], () => rs.map((r) => [r.handle, String(r.port), r.created]));
};

/** `lessl route rm TASK HANDLE...`: revokes routes. */
export const routeRm = async (c: LesslClient, io: Io, task: string, handles: readonly string[]): Promise<number> => {
  for (const h of handles) await c.removeRoute(task, h);
  if (io.json) writeJson(io, { removed: handles });
  else for (const h of handles) io.out.write(`${h}\n`);
  return 0;
};
