/**
 * Users and bearer tokens. Tokens are random (`lsl_` + 32 random bytes, base64url) and stored
 * as their SHA-256 only. The admin token comes from the environment (LESSL_ADMIN_TOKEN, the
 * `adminToken` option) or, at a first start with neither, is made and handed out once.
 */
import { createHash, randomBytes } from 'node:crypto';
import { fromUtf8, functionOwnerRule, type Authorizer, type FunctionAuthorizer } from '@lessl/core';
import type { ServiceDb, UserRecord } from './db.js';
import { SYSTEM, USER_PRINCIPAL } from './elements.js';

/** SHA-256 hex of a string. */
export const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

/** A new random token. */
export const newToken = (): string => `lsl_${randomBytes(32).toString('base64url')}`;

/** The name of the built-in admin. */
export const ADMIN = 'admin';

/**
 * Makes a user and a token for it in one batch; answers the token (shown once), or undefined when
 * a user of that name exists (checked where it is written: of concurrent adds of a name, one wins).
 */
export const addUser = (db: ServiceDb, user: UserRecord, token: string = newToken()): Promise<string | undefined> =>
  db.transact(() =>
    db.users.has(user.name)
      ? { result: undefined }
      : { change: { users: [user], tokens: [{ hash: sha256(token), user: user.name }] }, result: token },
  );

/**
 * Makes sure there is an admin: with `token`, that token is the admin's (added if new); without,
 * on a first start (no users), a token is made and answered (print it once); otherwise undefined.
 */
export const bootstrapAdmin = async (db: ServiceDb, token: string | undefined): Promise<string | undefined> => {
  if (token !== undefined && token !== '') {
    const hash = sha256(token);
    const admin: UserRecord = { name: ADMIN, admin: true, created: new Date().toISOString() };
    await db.transact(() =>
      db.tokens.get(hash) === ADMIN
        ? { result: undefined }
        : { change: { tokens: [{ hash, user: ADMIN }], ...(db.users.has(ADMIN) ? {} : { users: [admin] }) }, result: undefined },
    );
    return undefined;
  }
  if (db.users.size > 0) return undefined;
  return addUser(db, { name: ADMIN, admin: true, created: new Date().toISOString() });
};

/** The user a bearer `Authorization` header names, or undefined (also for a user being removed). */
export const authenticate = (db: ServiceDb, header: unknown): UserRecord | undefined => {
  if (typeof header !== 'string') return undefined;
  const m = /^Bearer ([A-Za-z0-9._~+/=-]{8,512})$/.exec(header.trim());
  if (m === null) return undefined;
  const name = db.tokens.get(sha256(m[1] ?? ''));
  const user = name === undefined ? undefined : db.users.get(name);
  return user?.leaving === undefined ? user : undefined;
};

/** What `callerOf` worked out for one request: the header it read and the user it names. */
interface Caller {
  readonly db: ServiceDb;
  readonly header: unknown;
  readonly user: UserRecord | undefined;
}

/** The callers of requests in flight, by their raw request (gone with it). */
const callers = new WeakMap<object, Caller>();

/**
 * `authenticate` of a request's `Authorization` header, worked out once per request (the rate
 * limit and the authenticated scope both ask: one hash and one lookup). `raw` is the node request
 * (fastify's `req.raw`), alive as long as the request.
 */
export const callerOf = (
  db: ServiceDb,
  raw: { readonly headers: { readonly authorization?: unknown } },
): UserRecord | undefined => {
  const header = raw.headers.authorization;
  const known = callers.get(raw);
  if (known !== undefined && known.db === db && known.header === header) return known.user;
  const user = authenticate(db, header);
  callers.set(raw, { db, header, user });
  return user;
};

/**
 * The SDK authorizer of an embedded service: the service itself (and the embedding process,
 * which calls without a principal: the SDK names it `anonymous`) may do anything; a user may
 * create, and touch only elements whose ro `owner` is theirs, or read and compose public
 * (unowned) images. The service calls on behalf of its users as `user:<name>` (`userPrincipal`),
 * so no user name (not even `anonymous`) ever reaches the SDK as the service's or the embedder's.
 */
export const ownerAuthorizer: Authorizer = (principal, op, _id, element) => {
  const user = userOf(principal);
  if (user === undefined) return true;
  if (element === undefined) return op === 'create' || op === 'list' || op === 'compose';
  const owner = fromUtf8(element.ro).owner;
  if (owner === user) return true;
  return owner === undefined && element.id.kind === 'image' && (op === 'read' || op === 'compose' || op === 'list');
};

/**
 * The SDK function authorizer of an embedded service: the service itself (which admins act as)
 * and the embedding process may do anything; users as `functionOwnerRule` says (their own
 * functions, and reading and invoking public ones).
 */
export const serviceFunctionAuthorizer: FunctionAuthorizer = (principal, op, fn) =>
  userOf(principal) === undefined || functionOwnerRule(principal, op, fn);

/** The user a principal names, or undefined for the service itself and the embedding process. */
const userOf = (principal: string): string | undefined => {
  if (principal.startsWith(USER_PRINCIPAL)) return principal.slice(USER_PRINCIPAL.length);
  return principal === SYSTEM || principal === 'anonymous' || principal === '' ? undefined : principal;
};
