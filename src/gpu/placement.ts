import { isLoopbackHost } from '../config/load.js';
import type { Backend } from '../upstream/backend.js';
import type { GpuStatus } from './monitor.js';
import type { GpuReading } from './nvidia-smi.js';
import { descendsFrom, type ListenerCache } from './procfs.js';
import type { PlacedModel, Placement } from '../contract/index.js';
export type { PlacedModel, Placement } from '../contract/index.js';

/** The GPU a CUDA_VISIBLE_DEVICES-style value (index or UUID) names. */
export function gpuById(gpus: readonly GpuReading[], id: number | string): GpuReading | undefined {
  return gpus.find((g) => (typeof id === 'number' || /^\d+$/.test(id) ? g.index === Number(id) : g.uuid === id));
}

/**
 * Joins each backend's loaded models (/api/ps) with the GPU it runs on: the device the bridge gave
 * a managed instance, else the backend's `gpu` setting, else the GPU on which nvidia-smi sees the
 * processes of the instance listening on that port (its runners), so instances the bridge did not
 * start are placed too.
 */
export function placeModels(
  backends: readonly Backend[],
  gpu: GpuStatus,
  managedDevice: (backend: string) => string | undefined,
  listeners: ListenerCache,
): Placement[] {
  return backends.map((backend) => {
    const models: PlacedModel[] = backend.loaded.map((m) => ({
      name: m.model,
      sizeBytes: m.size,
      vramBytes: m.size_vram,
      contextLength: m.context_length ?? null,
      expiresAt: m.expires_at,
    }));
    const server = gpu.processes.length > 0 && isLoopbackHost(backend.url.hostname) ? listeners.pidOf(Number(backend.url.port || 80)) : undefined;
    const apps = server === undefined ? [] : gpu.processes.filter((p) => descendsFrom(p.pid, server));
    const processVramBytes = apps.length === 0 ? null : apps.reduce((sum, p) => sum + (p.usedMemoryBytes ?? 0), 0);

    const managed = managedDevice(backend.name);
    let reading: GpuReading | undefined;
    let gpuFrom: Placement['gpuFrom'] = null;
    if (managed !== undefined && (reading = gpuById(gpu.gpus, managed)) !== undefined) gpuFrom = 'managed';
    else if (backend.gpu !== null && (reading = gpuById(gpu.gpus, backend.gpu)) !== undefined) gpuFrom = 'config';
    else if (apps[0] !== undefined && (reading = gpu.gpus.find((g) => g.uuid === apps[0]?.gpuUuid)) !== undefined) gpuFrom = 'processes';
    return {
      backend: backend.name,
      gpu: reading === undefined ? null : { index: reading.index, uuid: reading.uuid, name: reading.name },
      gpuFrom,
      models,
      processVramBytes,
    };
  });
}
