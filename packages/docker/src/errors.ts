/**
 * Docker failures onto the lessl taxonomy, by HTTP status code (never by message where a
 * status says it): 404 NotFound, 409 NameCollision/InUse/Conflict (by operation), 400
 * InvalidEntry, 403 PermissionDenied, 501 Unsupported, 503 and connection errors Unavailable.
 */
import {
  invalidEntry,
  inUse,
  nameCollision,
  notFound,
  permissionDenied,
  runtimeError,
  unavailable,
  unsupported,
  conflict,
  type AnyError,
} from '@lessl/core';
import { fieldOf as prop } from '@lessl/core';

/** What a 409 means for the operation at hand. */
export type On409 = 'NameCollision' | 'InUse' | 'Conflict';

const CONN = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'EACCES', 'ECONNABORTED']);

/** Status code of a dockerode error, if any. */
export const statusOf = (err: unknown): number | undefined => {
  const s = prop(err, 'statusCode');
  return typeof s === 'number' ? s : undefined;
};

/** Certificate verification failures of Node's TLS (the engine presents a certificate the CA does not sign, ...). */
const CERT = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'EPROTO',
]);

/** True when a TLS handshake failed: a certificate refused on either side, or no TLS spoken. */
export const isTlsError = (err: unknown): boolean => {
  const code = prop(err, 'code');
  if (statusOf(err) !== undefined || typeof code !== 'string') return false;
  return CERT.has(code) || /^ERR_(SSL|TLS|OSSL)_/.test(code);
};

/** True when the engine could not be reached at all (no connection, or no TLS session with it). */
export const isConnectionError = (err: unknown): boolean => {
  const code = prop(err, 'code');
  return statusOf(err) === undefined && typeof code === 'string' && (CONN.has(code) || isTlsError(err));
};

/** True for errors from the engine (a status code, or no connection), false for stream/data errors. */
export const isDockerError = (err: unknown): boolean => statusOf(err) !== undefined || isConnectionError(err);

const msg = (err: unknown): string => {
  const j = prop(prop(err, 'json'), 'message');
  if (typeof j === 'string') return j;
  return err instanceof Error ? err.message : String(err);
};

/** Maps a dockerode error. */
export const fromDocker = (id: string, err: unknown, on409: On409 = 'Conflict', refs: readonly string[] = []): AnyError => {
  if (isConnectionError(err)) {
    const endpoint = prop(err, 'endpoint');
    const which = typeof endpoint === 'string' ? ` ${endpoint}` : '';
    const tls = isTlsError(err) ? 'TLS failed: ' : '';
    return unavailable(id, `the Docker engine${which} is unreachable: ${tls}${msg(err)}`, err);
  }
  switch (statusOf(err)) {
    case 404:
      return { ...notFound(id), message: `not found in Docker: ${msg(err)}` };
    case 409:
      if (on409 === 'NameCollision') return nameCollision(id);
      if (on409 === 'InUse') return { ...inUse(id, refs), message: `in use: ${msg(err)}` };
      return { ...conflict(id, -1, -1), message: `conflict: ${msg(err)}` };
    case 400:
      return invalidEntry(`Docker refused the request: ${msg(err)}`, id, ['request']);
    case 403:
      return permissionDenied(id, 'docker', 'create');
    case 501:
      return unsupported(id, msg(err));
    case 503:
      return unavailable(id, `the Docker engine is unavailable: ${msg(err)}`, err);
    default:
      return runtimeError(id, `Docker failed: ${msg(err)}`, err);
  }
};
