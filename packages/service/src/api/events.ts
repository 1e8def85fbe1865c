/**
 * `GET /v1/events`: Server-Sent Events of the caller's elements, resumable with an opaque
 * per-user `Last-Event-ID`.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { eventToJson, invalidEntry, kindOfKey, LesslError, type LesslEvent } from '@lessl/core';
import type { EventCursors } from '../cursors.js';
import type { UserRecord } from '../db.js';
import { as, isPublic, readElement, serviceTaskOf } from '../elements.js';
import { problem, route } from '../http.js';
import { HttpProblem, problemOf } from '../problem.js';
import { EventsQueryC } from '../spec.js';
import type { RouteDeps } from './deps.js';

/**
 * Where an event stream starts: after the event a `Last-Event-ID` (else `?since=`) names, `0`
 * for the beginning, undefined for live from now. An id this user was not given is a 400.
 */
const sinceOf = (cursors: EventCursors, user: string, header: unknown, query: string | undefined): number | undefined => {
  const [from, key] = typeof header === 'string' && header !== '' ? [header, 'Last-Event-ID'] : [query, 'since'];
  if (from === undefined) return undefined;
  const seq = from === '0' ? 0 : cursors.decode(user, from);
  if (seq === undefined) throw new HttpProblem(invalidEntry(`${key} is not an event id of this stream`, '', [key]), 400);
  return seq;
};

/** Whether an event is about the caller's own things: their service tasks' elements, or elements they own (admins: all). */
const mineFor =
  (d: RouteDeps, user: UserRecord) =>
  async (e: LesslEvent): Promise<boolean> => {
    if (user.admin) return true;
    const fnOwner = await d.functions.ownerOf(e);
    if (fnOwner !== undefined) return fnOwner === user.name;
    const task = serviceTaskOf(e.id.key);
    if (task !== undefined) return d.db.tasks.get(task)?.owner === user.name;
    // the caller's own elements: those the authorizer lets them read, but not public ones
    const kind = kindOfKey(e.id.key);
    const el = kind === undefined ? undefined : await readElement(d.backend, kind, e.id.key, as(user.name));
    return el !== undefined && !isPublic(el);
  };

/** The SSE text of the caller's events from `since` until the client goes (or the backend closes). */
async function* sse(d: RouteDeps, req: FastifyRequest, user: UserRecord, since: number): AsyncGenerator<string> {
  const ac = new AbortController();
  req.raw.on('close', () => ac.abort());
  const stream = d.backend.events.stream({}, { since, signal: ac.signal, overflow: 'drop-oldest', highWaterMark: 4096 });
  const mine = mineFor(d, user);
  yield ': lessl events\n\n';
  try {
    for await (const e of stream) {
      if (!(await mine(e))) continue;
      const { seq: _seq, ...data } = eventToJson(e); // the global seq stays in the service (admins see it)
      const id = d.cursors.encode(user.name, e.seq);
      yield `id: ${id}\nevent: ${e.type}\ndata: ${JSON.stringify(user.admin ? { seq: e.seq, ...data } : data)}\n\n`;
    }
  } catch (err) {
    // the client went away, or the backend closed; a replay past retention says why it ends
    if (err instanceof LesslError) yield `event: error\ndata: ${JSON.stringify(problemOf(err.error, 400, req.url))}\n\n`;
  } finally {
    stream.close();
  }
}

/** The plugin of the event stream. */
export const eventRoutes =
  (d: RouteDeps): FastifyPluginAsync =>
  async (scope) => {
    route(scope, {
      method: 'GET',
      url: '/v1/events',
      summary: "Server-Sent Events of the caller's elements (lessl events); resumable with Last-Event-ID (an opaque id per user)",
      tags: ['events'],
      auth: 'user',
      query: EventsQueryC,
      responses: {
        200: {
          description: "an event stream: id = the event's id for this user (opaque), event = type, data = the lessl event",
          contentType: 'text/event-stream',
        },
        400: problem('Last-Event-ID or since is not an event id this user was given'),
      },
      handler: async ({ req, reply, user, query }) => {
        const since = sinceOf(d.cursors, user.name, req.headers['last-event-id'], query?.since) ?? d.backend.events.lastSeq();
        reply.header('content-type', 'text/event-stream').header('cache-control', 'no-store').header('x-accel-buffering', 'no');
        return Readable.from(sse(d, req, user, since));
      },
    });
  };
