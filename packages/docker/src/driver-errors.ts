/**
 * Errors narrowed to what an element driver's call may answer: `create` answers a `CreateError`,
 * `destroy` and `references` a `DeleteError`. An error outside the call's taxonomy (e.g. a
 * NotFound while creating) becomes a RuntimeError with the same message.
 */
import { runtimeError, type AnyError, type CreateError, type DeleteError } from '@lessl/core';

const CREATE_TAGS: Readonly<Record<CreateError['_tag'], true>> = {
  UnknownLocation: true,
  InvalidLocation: true,
  NameCollision: true,
  UnknownParent: true,
  InvalidParent: true,
  InvalidEntry: true,
  ReadOnlyKey: true,
  RuntimeError: true,
  PermissionDenied: true,
  ChecksumMismatch: true,
  UnsupportedChecksum: true,
  Unsupported: true,
  Unavailable: true,
  Aborted: true,
};

const DELETE_TAGS: Readonly<Record<DeleteError['_tag'], true>> = {
  UnknownLocation: true,
  InvalidLocation: true,
  InvalidEntry: true,
  NotFound: true,
  InUse: true,
  PermissionDenied: true,
  RuntimeError: true,
  Unsupported: true,
  Unavailable: true,
};

/** True when `create` may answer `e`. */
export const isCreateError = (e: AnyError): e is CreateError => Object.hasOwn(CREATE_TAGS, e._tag);

/** True when `destroy` may answer `e`. */
export const isDeleteError = (e: AnyError): e is DeleteError => Object.hasOwn(DELETE_TAGS, e._tag);

/** `e` as a create's answer. */
export const createErrorOf = (e: AnyError): CreateError => (isCreateError(e) ? e : runtimeError(e.id, e.message));

/** `e` as a delete's answer (`cause`: the failure it was mapped from, kept on a RuntimeError). */
export const deleteErrorOf = (e: AnyError, cause?: unknown): DeleteError =>
  isDeleteError(e) ? e : runtimeError(e.id, e.message, cause);

export { messageOf } from '@lessl/core';
