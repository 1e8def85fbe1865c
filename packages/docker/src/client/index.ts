/**
 * The client seam (after testcontainers' `ContainerRuntimeClient`): one small typed interface per
 * resource. They own names, labels and filters (`listOwned`, `listOf`, `removeOwned`): the
 * drivers never build a `label=` filter or reach dockerode. Every call goes through the host's
 * `CallRunner` (the call guard: bounds, per-host error tracking).
 */
import type Docker from 'dockerode';
import { direct, type CallRunner } from './call.js';
import { dockerContainers, type ContainersClient } from './containers.js';
import { dockerExec, type ExecClient } from './exec.js';
import { dockerImages, type ImagesClient } from './images.js';
import { dockerServices, type ServicesClient } from './services.js';
import { dockerSystem, type SystemClient } from './system.js';
import { dockerVolumes, type VolumesClient } from './volumes.js';

export type { Call, CallOptions, CallRunner } from './call.js';
export { direct } from './call.js';
export type { CommitOptions, ContainersClient } from './containers.js';
export type { ExecClient } from './exec.js';
export type { ImagesClient, ImportOptions } from './images.js';
export type { ServiceInfo, ServicesClient, ServiceTask } from './services.js';
export type { EngineEvent, EngineInfo, SystemClient } from './system.js';
export type { VolumesClient } from './volumes.js';

/** Every client of one engine. */
export interface Clients {
  readonly containers: ContainersClient;
  readonly images: ImagesClient;
  readonly volumes: VolumesClient;
  readonly exec: ExecClient;
  readonly services: ServicesClient;
  readonly system: SystemClient;
}

/** The clients of one engine over a dockerode client; `instance` is the registry whose objects are "owned". */
export const dockerClients = (docker: Docker, instance: string, run: CallRunner = direct): Clients => ({
  containers: dockerContainers(docker, instance, run),
  images: dockerImages(docker, instance, run),
  volumes: dockerVolumes(docker, instance, run),
  exec: dockerExec(docker, run),
  services: dockerServices(docker, instance, run),
  system: dockerSystem(docker, run),
});
