import type { GpuPoint, GpuReading } from './types.js';

/** The part of a GPU reading its history keeps, stamped with the sample time (ms since the epoch). */
export function gpuPoint(reading: GpuReading, t: number): GpuPoint {
  return {
    t,
    memoryUsedBytes: reading.memoryUsedBytes,
    utilizationRatio: reading.utilizationRatio,
    temperatureCelsius: reading.temperatureCelsius,
    powerWatts: reading.powerWatts,
  };
}
