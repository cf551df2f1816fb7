import type { GpuReading, ComputeApp } from '../contract/index.js';
export type { GpuReading, ComputeApp } from '../contract/index.js';
/**
 * Parsers for nvidia-smi's machine-readable output (`--query-gpu`, `--query-compute-apps`,
 * `--help-query-*`), written against real output of driver 580 (test/fixtures): values may
 * carry units ("81559 MiB", "100 %", "698.92 W") unless `nounits` was asked, unsupported fields
 * print "[N/A]" (also "N/A" or "[Not Supported]" on older drivers), and one line is one GPU.
 */

/** The GPU fields the monitor asks for, in order. */
export const GPU_FIELDS = [
  'index',
  'uuid',
  'name',
  'pci.bus_id',
  'memory.total',
  'memory.used',
  'memory.free',
  'memory.reserved',
  'utilization.gpu',
  'utilization.memory',
  'temperature.gpu',
  'power.draw',
  'power.limit',
  'clocks.gr',
  'clocks.mem',
  'pstate',
] as const;

export const COMPUTE_APP_FIELDS = ['pid', 'process_name', 'used_memory', 'gpu_uuid'] as const;

const MIB = 1024 * 1024;

const NOT_AVAILABLE = /^\[?(N\/A|Not Supported|Unknown Error|Insufficient Permissions|Requested functionality has been deprecated)\]?$/i;

/**
 * Splits CSV lines (nvidia-smi never quotes; product names have no commas) into trimmed cells,
 * keeping only lines with one cell per field asked for: nvidia-smi prints an error line in place of
 * a GPU it lost ("Unable to determine the device handle for GPU0000:07:00.0: Unknown Error"), and
 * one killed mid-line leaves a line cut short; neither is a reading.
 */
function rows(text: string, fields: readonly string[]): string[][] {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line !== '')
    .map((line) => line.split(',').map((cell) => cell.trim()))
    .filter((cells) => cells.length === fields.length);
}

/** A number with or without its unit; null for "[N/A]" and the like. */
export function numberOf(cell: string | undefined): number | null {
  if (cell === undefined || NOT_AVAILABLE.test(cell)) return null;
  const match = /^(-?\d+(?:\.\d+)?)\s*(MiB|GiB|KiB|%|W|MHz|C)?$/.exec(cell);
  if (match === null) return null;
  const value = Number(match[1]);
  if (match[2] === 'GiB') return value * 1024;
  if (match[2] === 'KiB') return value / 1024;
  return value;
}

function textOf(cell: string | undefined): string | null {
  return cell === undefined || cell === '' || NOT_AVAILABLE.test(cell) ? null : cell;
}

/** Whether the first line is a header ("index, uuid, memory.total [MiB], ..."), as without `noheader`. */
function hasHeader(firstRow: readonly string[], fields: readonly string[]): boolean {
  return firstRow.length > 0 && firstRow[0]?.toLowerCase().startsWith(String(fields[0]).toLowerCase()) === true && numberOf(firstRow[0]) === null;
}

/** Maps each line of a `--query-gpu=<fields>` answer to a reading; fields not asked for stay null. */
export function parseGpuQuery(text: string, fields: readonly string[] = GPU_FIELDS): GpuReading[] {
  const table = rows(text, fields);
  const body = table.length > 0 && hasHeader(table[0] as string[], fields) ? table.slice(1) : table;
  return body.map((cells) => {
    const get = (field: string): string | undefined => {
      const at = fields.indexOf(field);
      return at < 0 ? undefined : cells[at];
    };
    const mib = (field: string): number | null => {
      const value = numberOf(get(field));
      return value === null ? null : Math.round(value * MIB);
    };
    const ratio = (field: string): number | null => {
      const value = numberOf(get(field));
      return value === null ? null : value / 100;
    };
    return {
      index: numberOf(get('index')) ?? -1,
      uuid: textOf(get('uuid')),
      name: textOf(get('name')),
      busId: textOf(get('pci.bus_id')),
      memoryTotalBytes: mib('memory.total'),
      memoryUsedBytes: mib('memory.used'),
      memoryFreeBytes: mib('memory.free'),
      memoryReservedBytes: mib('memory.reserved'),
      utilizationRatio: ratio('utilization.gpu'),
      memoryUtilizationRatio: ratio('utilization.memory'),
      temperatureCelsius: numberOf(get('temperature.gpu')),
      powerWatts: numberOf(get('power.draw')),
      powerLimitWatts: numberOf(get('power.limit')),
      graphicsClockMhz: numberOf(get('clocks.gr')),
      memoryClockMhz: numberOf(get('clocks.mem')),
      pstate: textOf(get('pstate')),
    };
  });
}

/** Maps a `--query-compute-apps=<fields>` answer (an empty list prints nothing, or only the header). */
export function parseComputeApps(text: string, fields: readonly string[] = COMPUTE_APP_FIELDS): ComputeApp[] {
  const table = rows(text, fields);
  const body = table.length > 0 && hasHeader(table[0] as string[], fields) ? table.slice(1) : table;
  const at = (name: string, ...aliases: string[]): number => [name, ...aliases].map((n) => fields.indexOf(n)).find((i) => i >= 0) ?? -1;
  return body.map((cells) => {
    const memory = numberOf(cells[at('used_memory', 'used_gpu_memory')]);
    return {
      pid: numberOf(cells[at('pid')]) ?? -1,
      processName: cells[at('process_name', 'name')] ?? '',
      usedMemoryBytes: memory === null ? null : Math.round(memory * MIB),
      gpuUuid: cells[at('gpu_uuid')] ?? '',
    };
  });
}

/** The field names a driver accepts, from `--help-query-gpu` (aliases included: "name" or "gpu_name"). */
export function parseSupportedFields(helpText: string): Set<string> {
  const fields = new Set<string>();
  for (const line of helpText.split(/\r?\n/)) {
    if (!line.startsWith('"')) continue;
    for (const match of line.matchAll(/"([^"]+)"/g)) fields.add(match[1] as string);
  }
  return fields;
}

/**
 * Groups the lines of a long-lived `-lms` query into samples: each round prints one line per GPU,
 * so a GPU index seen again starts the next sample.
 */
export class SampleSplitter {
  private batch: GpuReading[] = [];

  constructor(
    private readonly fields: readonly string[],
    private readonly onSample: (readings: GpuReading[]) => void,
  ) {}

  /** Takes one line; false when it is no reading (an error nvidia-smi printed in its place). */
  line(text: string): boolean {
    const [reading] = parseGpuQuery(text, this.fields);
    if (reading === undefined) return false;
    if (this.batch.some((r) => r.index === reading.index)) this.flush();
    this.batch.push(reading);
    return true;
  }

  flush(): void {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    this.batch = [];
    this.onSample(batch);
  }
}
