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

/** How far a long operation (an image pull, load, build or download) has come. */
export interface Progress {
  /** What it is doing now, e.g. `pull`, `download`, `load`, `clone`, `build`, `import`. */
  readonly phase: string;
  /** Bytes done so far (downloaded, sent to the engine, or layer bytes pulled). */
  readonly bytes?: number;
  /** Bytes in all, when known. */
  readonly totalBytes?: number;
  /** Layers (or build steps) finished, and how many there are, when known. */
  readonly done?: number;
  readonly total?: number;
  /** The engine's own words for the last step, e.g. `Step 2/4 : COPY . /app`. */
  readonly detail?: string;
}

/** Per-call context: who calls, a signal to abort long operations, and where to report their progress. */
export interface CallContext {
  readonly principal?: string;
  readonly signal?: AbortSignal;
  /** Called as a long create goes on (images from a registry, a tarball, a URL, git). Must not throw. */
  readonly onProgress?: (p: Progress) => void;
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
