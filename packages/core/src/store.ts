/**
 * The store contract: Go-style Create/Read/Update/Delete (+ List), each a `TaskEither`.
 */
import type { TaskEither } from 'fp-ts/lib/TaskEither.js';
import type { DataSource } from './checksum.js';
import type { Element } from './element.js';
import type { CreateError, DeleteError, Operation, ReadError, StorePolicy, UpdateError } from './errors.js';
import type { ElementKind, IdLike } from './id.js';
import type { ListFilter, ReadFilter } from './filter.js';
import type { Metadata, MetadataPatch } from './metadata.js';

/** Per-call context: who calls, and a signal to abort long operations. */
export interface CallContext {
  readonly principal?: string;
  readonly signal?: AbortSignal;
}

/** What `create` takes. */
export interface CreateRequest {
  /** `<kind>://<store>/<name>`: where to create it and what to call it. */
  readonly id: IdLike;
  readonly parent?: IdLike;
  /** Content: a tar stream for images and volumes. */
  readonly data?: DataSource;
  /** `sha256:<hex>` of `data`, verified while streaming. */
  readonly checksum?: string;
  /** Fixed at create. */
  readonly ro?: Metadata;
  /** Patchable later; keys must not be in `ro`. */
  readonly rw?: Metadata;
  /** For tasks: the task spec (see `TaskSpecC`). */
  readonly spec?: unknown;
  /** Backend-specific creation options (documented by each backend). */
  readonly options?: Readonly<Record<string, unknown>>;
}

/** Options for `update`. */
export interface UpdateOptions {
  /** Optimistic concurrency: answer `Conflict` unless the element is at this revision. */
  readonly ifRevision?: number;
}

/** One store per kind and location. All methods answer typed errors and never throw. */
export interface ElementStore {
  create(req: CreateRequest, ctx?: CallContext): TaskEither<CreateError, Element>;
  read(id: IdLike, filter?: ReadFilter, ctx?: CallContext): TaskEither<ReadError, Element>;
  update(id: IdLike, patch: MetadataPatch, opts?: UpdateOptions, ctx?: CallContext): TaskEither<UpdateError, Element>;
  delete(id: IdLike, ctx?: CallContext): TaskEither<DeleteError, void>;
  list(filter?: ListFilter, ctx?: CallContext): TaskEither<ReadError, readonly Element[]>;
}

/** Configuration of one store location. */
export interface StoreConfig {
  readonly kind: ElementKind;
  readonly name: string;
  readonly policy?: StorePolicy;
  /** Whether elements here may have parents (default true; an nfs store says false). */
  readonly parents?: boolean;
  /** Backend-specific options (e.g. a volume driver). */
  readonly options?: Readonly<Record<string, unknown>>;
}

/** Decides `PermissionDenied`. `element` is the target when it exists. */
export type Authorizer = (principal: string, op: Operation, id: string, element?: Element) => boolean;

/** The default authorizer: allows everything. */
export const allowAll: Authorizer = () => true;
