import type { Placement } from '../gpu/placement.js';
import type { GpuStatus } from '../gpu/monitor.js';
import type { Backend } from '../upstream/backend.js';
import { canonicalModelName } from '../contract/index.js';
import type { FitCheck } from '../contract/index.js';
export type { FitCheck } from '../contract/index.js';

/** Weights plus room for the context cache and runtime buffers: a deliberate over-estimate. */
const OVERHEAD = 1.2;

const GIB = 1024 ** 3;
const gib = (bytes: number): string => `${(bytes / GIB).toFixed(1)} GiB`;

/**
 * Whether `model` fits on the GPU of `backend` now: its file size (from /api/tags) with a 20%
 * allowance against the GPU's free memory. A model already in memory there always fits.
 */
export function checkFit(model: string, backend: Backend, sizeBytes: number | undefined, placement: Placement | undefined, gpu: GpuStatus): FitCheck {
  const name = canonicalModelName(model);
  const gpuIndex = placement?.gpu?.index ?? null;
  if (placement?.models.some((m) => canonicalModelName(m.name) === name) === true) {
    return { fits: true, needBytes: null, freeBytes: null, gpu: gpuIndex, message: `${model} is already loaded on ${backend.name}` };
  }
  const reading = gpuIndex === null ? undefined : gpu.gpus.find((g) => g.index === gpuIndex);
  // Figures from before nvidia-smi went down are no measure of the GPU now.
  const free = gpu.live ? (reading?.memoryFreeBytes ?? null) : null;
  const need = sizeBytes === undefined ? null : Math.round(sizeBytes * OVERHEAD);
  if (free === null || need === null) {
    const why = need === null ? `the size of ${model} is unknown` : `no live VRAM figures for ${backend.name}`;
    return { fits: null, needBytes: need, freeBytes: free, gpu: gpuIndex, message: `${why}; not checked` };
  }
  const fits = need <= free;
  const where = `GPU ${gpuIndex} (${backend.name})`;
  return {
    fits,
    needBytes: need,
    freeBytes: free,
    gpu: gpuIndex,
    message: fits
      ? `${model} needs about ${gib(need)}; ${where} has ${gib(free)} free`
      : `${model} needs about ${gib(need)} but ${where} has only ${gib(free)} free; unload a model first or force the load`,
  };
}

/** Loads a model into memory (Ollama: an empty prompt loads it) and keeps it for `keepAlive`. */
export async function preloadModel(backend: Backend, model: string, keepAlive: string | number): Promise<void> {
  await backend.callJson('POST', '/api/generate', { model, prompt: '', keep_alive: keepAlive, stream: false }, 10 * 60_000);
  await backend.check(2000);
}

/**
 * Unloads a model (Ollama: an empty prompt with keep_alive 0). Ollama answers before the runner has
 * gone, so this waits (up to `waitMs`) until /api/ps no longer lists it: under its own name, or,
 * given its `digest` there, under another name of its file. False when it is still listed then:
 * Ollama keeps a model that requests are using until they end.
 */
export async function unloadModel(backend: Backend, model: string, digest?: string, waitMs = 5000): Promise<boolean> {
  await backend.callJson('POST', '/api/generate', { model, prompt: '', keep_alive: 0, stream: false }, 60_000);
  const deadline = Date.now() + waitMs;
  do {
    await backend.check(2000);
    if (!backend.hasLoaded(model, digest)) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  } while (Date.now() < deadline);
  return false;
}
