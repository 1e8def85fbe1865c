/**
 * @lessl/service: the lessl task service. `createServer(options)` runs seed-001 task specs in
 * containers over REST (fastify), with a durable job queue, users and a TTL reaper, on any
 * lessl backend (the Docker backend by default).
 * @packageDocumentation
 */
export { createServer, type LesslServer, type PolicyOptions, type ServerOptions, type ServerTls } from './server.js';
export { ownerAuthorizer, serviceFunctionAuthorizer, newToken, sha256, ADMIN } from './auth.js';
export {
  DEFAULT_POLICY,
  DEFAULT_QUOTAS,
  planTask,
  isTextType,
  type Policy,
  type TaskPlan,
  type FullLimits,
  type Quotas,
  type QuotaPolicy,
} from './plan.js';
export {
  QuotasC,
  QuotaPatchC,
  UserPatchC,
  UserQuotaViewC,
  QUOTA_RETRY_AFTER,
  type HeldQuota,
  type QuotaPatch,
  type QuotaUsage,
  type UserQuotaView,
} from './quotas.js';
export * from './spec.js';
export * from './stack.js';
export { ImageNameC, ImageSourceC, type ImageSource } from './sources.js';
export { toJsonSchema, decodeWith, type JsonSchema, type JsonValue } from './codec.js';
export { STATUS, problemOf, ProblemC, type Problem } from './problem.js';
export { JobViewC, TaskViewC, CommandViewC, TaskPageC, type JobView, type TaskView } from './views.js';
export { elementsOf, serviceTaskOf, SYSTEM } from './elements.js';
export {
  NewRouteC,
  NewRouteViewC,
  RouteItemC,
  RouteListC,
  MAX_ROUTES,
  type NewRouteView,
  type RouteItem,
} from './routes-share.js';
export {
  FunctionBodyC,
  FunctionViewC,
  FunctionListC,
  InvocationLogC,
  InvocationResultC,
  type FunctionBody,
  type FunctionView,
} from './functions.js';
export { DEFAULT_RETENTION, type Retention, type PruneResult } from './retention.js';
export { LEAVE_KINDS } from './db.js';
export type {
  JobRecord,
  JobState,
  RouteRecord,
  TaskRecord,
  UserRecord,
  CommandRecord,
  InvokeRecord,
  InvocationResultRecord,
  LeaveRecord,
  LeaveKind,
  HostRecord,
} from './db.js';
export {
  PoolConfigC,
  PoolProfileC,
  PurgeBodyC,
  profileRequests,
  type PoolConfig,
  type PoolProfile,
  type PreloadImage,
} from './operate.js';
