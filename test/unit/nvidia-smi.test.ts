import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { GPU_FIELDS, numberOf, parseComputeApps, parseGpuQuery, parseSupportedFields, SampleSplitter, type GpuReading } from '../../src/gpu/nvidia-smi.js';
import { FIXTURE_GPU_FIELDS, H100, TWO_GPU } from '../support/gpu.js';

const read = (dir: string, file: string): string => readFileSync(path.join(dir, file), 'utf8');
const MIB = 1024 * 1024;

const FIXTURE_FIELDS = FIXTURE_GPU_FIELDS;
const SI_FIELDS =
  'driver_version,pci.sub_device_id,name,pci.bus_id,fan.speed,memory.total,memory.used,memory.free,utilization.gpu,utilization.memory,temperature.gpu,temperature.memory,power.draw,power.limit,clocks.gr,clocks.mem'.split(
    ',',
  );

function only(readings: GpuReading[]): GpuReading {
  assert.equal(readings.length, 1);
  return readings[0] as GpuReading;
}

describe('nvidia-smi parsers against real driver-580 output', () => {
  it('reads every field of --query-gpu with header and units, idle and loaded', () => {
    const idle = only(parseGpuQuery(read(H100, 'query-gpu.csv.idle.txt'), FIXTURE_FIELDS));
    assert.deepEqual(idle, {
      index: 0,
      uuid: 'GPU-dcb97cc3-bfea-612d-75e8-f8d20ee6e2e0',
      name: 'NVIDIA H100 80GB HBM3',
      busId: '00000000:00:06.0',
      memoryTotalBytes: 81559 * MIB,
      memoryUsedBytes: 0,
      memoryFreeBytes: 81079 * MIB,
      memoryReservedBytes: 480 * MIB,
      utilizationRatio: 0,
      memoryUtilizationRatio: 0,
      temperatureCelsius: 39,
      powerWatts: 76.27,
      powerLimitWatts: 700,
      graphicsClockMhz: 345,
      memoryClockMhz: 2619,
      pstate: 'P0',
    });
    const loaded = only(parseGpuQuery(read(H100, 'query-gpu.csv.loaded.txt'), FIXTURE_FIELDS));
    assert.equal(loaded.memoryUsedBytes, 28287 * MIB);
    assert.equal(loaded.memoryFreeBytes, 52793 * MIB);
    assert.equal(loaded.utilizationRatio, 1);
    assert.equal(loaded.memoryUtilizationRatio, 0.34);
    assert.equal(loaded.temperatureCelsius, 65);
    assert.equal(loaded.powerWatts, 698.92);
    assert.equal(loaded.graphicsClockMhz, 1380);
  });

  it('reads the same answer without header and units, and keeps reserved memory apart', () => {
    for (const state of ['idle', 'loaded'] as const) {
      const withUnits = only(parseGpuQuery(read(H100, `query-gpu.csv.${state}.txt`), FIXTURE_FIELDS));
      const bare = only(parseGpuQuery(read(H100, `query-gpu.noheader-nounits.${state}.txt`), FIXTURE_FIELDS));
      assert.equal(bare.memoryTotalBytes, withUnits.memoryTotalBytes);
      assert.equal(bare.memoryUsedBytes, withUnits.memoryUsedBytes);
      assert.equal(bare.memoryReservedBytes, withUnits.memoryReservedBytes);
      // total is not used + free: the driver reserves 480 MiB (the real numbers are off by 1 MiB when loaded).
      const sum = (bare.memoryUsedBytes ?? 0) + (bare.memoryFreeBytes ?? 0);
      assert.notEqual(sum, bare.memoryTotalBytes);
      assert.ok(Math.abs(sum + (bare.memoryReservedBytes ?? 0) - (bare.memoryTotalBytes ?? 0)) <= MIB);
    }
  });

  it('turns [N/A] into null, with or without units', () => {
    assert.equal(numberOf('[N/A]'), null);
    assert.equal(numberOf('[Not Supported]'), null);
    assert.equal(numberOf('N/A'), null);
    assert.equal(numberOf('698.92 W'), 698.92);
    assert.equal(numberOf('100 %'), 100);
    const fields = [...FIXTURE_FIELDS];
    const cells = read(H100, 'query-gpu.noheader-nounits.idle.txt')
      .split(',')
      .map((c) => c.trim());
    assert.equal(cells[fields.indexOf('fan.speed')], '[N/A]');
    const [second] = parseGpuQuery(read(TWO_GPU, 'query-gpu.noheader-nounits.txt')).slice(1);
    assert.equal(second?.powerWatts, null);
    assert.equal(second?.powerLimitWatts, 700);
  });

  it('reads systeminformation’s own query (a different field list)', () => {
    const reading = only(parseGpuQuery(read(H100, 'si-query.idle.txt'), SI_FIELDS));
    assert.equal(reading.name, 'NVIDIA H100 80GB HBM3');
    assert.equal(reading.memoryTotalBytes, 81559 * MIB);
    assert.equal(reading.memoryFreeBytes, 81079 * MIB);
    assert.equal(reading.powerWatts, 76.26);
  });

  it('splits a long-lived -lms loop into one sample per round', () => {
    const samples: GpuReading[][] = [];
    const splitter = new SampleSplitter(['index', 'memory.used', 'utilization.gpu', 'power.draw'], (s) => samples.push(s));
    for (const line of read(H100, 'query-gpu.loop-500ms.txt').split('\n')) splitter.line(line);
    splitter.flush();
    assert.equal(samples.length, 8);
    assert.deepEqual(
      samples.map((s) => s[0]?.powerWatts),
      [697.46, 696.6, 700.5, 702.15, 698.64, 696.04, 698.19, 696.66],
    );
    assert.ok(samples.every((s) => s.length === 1 && s[0]?.memoryUsedBytes === 28287 * MIB && s[0]?.utilizationRatio === 1));

    const two: GpuReading[][] = [];
    const twoSplitter = new SampleSplitter(GPU_FIELDS, (s) => two.push(s));
    const round = read(TWO_GPU, 'query-gpu.noheader-nounits.txt');
    for (const line of `${round}${round}`.split('\n')) twoSplitter.line(line);
    twoSplitter.flush();
    assert.deepEqual(
      two.map((s) => s.map((r) => r.index)),
      [
        [0, 1],
        [0, 1],
      ],
    );
  });

  it('reads two GPUs in both formats alike', () => {
    const bare = parseGpuQuery(read(TWO_GPU, 'query-gpu.noheader-nounits.txt'));
    const withUnits = parseGpuQuery(read(TWO_GPU, 'query-gpu.csv.txt'));
    assert.deepEqual(withUnits, bare);
    assert.deepEqual(
      bare.map((g) => [g.index, g.uuid, g.memoryUsedBytes]),
      [
        [0, 'GPU-dcb97cc3-bfea-612d-75e8-f8d20ee6e2e0', 28287 * MIB],
        [1, 'GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21', 9650 * MIB],
      ],
    );
  });

  it('takes only whole lines for readings: an error line of a GPU that fell off the bus, or a line cut short, is none', () => {
    const [gpu0, gpu1] = read(TWO_GPU, 'query-gpu.noheader-nounits.txt').split('\n');
    // What nvidia-smi prints in place of a GPU it lost, and the start of a line of a killed nvidia-smi.
    const lost = 'Unable to determine the device handle for GPU0000:00:07.0: Unknown Error';
    const cut = (gpu1 ?? '').slice(0, (gpu1 ?? '').indexOf(', 81559') + ', 815'.length);
    assert.deepEqual(
      parseGpuQuery([gpu0, lost, cut].join('\n')).map((g) => [g.index, g.memoryTotalBytes]),
      [[0, 81559 * MIB]],
    );
    const [app] = read(TWO_GPU, 'compute-apps.noheader-nounits.txt').split('\n');
    assert.deepEqual(
      parseComputeApps([app, lost].join('\n')).map((a) => a.pid),
      [708],
    );
  });

  it('reads compute apps: none (header only), and two with and without units', () => {
    assert.deepEqual(parseComputeApps(read(H100, 'compute-apps.idle.txt'), ['pid', 'process_name', 'used_memory', 'gpu_uuid', 'gpu_bus_id']), []);
    const expected = [
      { pid: 708, processName: 'python3', usedMemoryBytes: 21610 * MIB, gpuUuid: 'GPU-dcb97cc3-bfea-612d-75e8-f8d20ee6e2e0' },
      { pid: 707, processName: 'python3', usedMemoryBytes: 6662 * MIB, gpuUuid: 'GPU-dcb97cc3-bfea-612d-75e8-f8d20ee6e2e0' },
    ];
    const fields = ['pid', 'process_name', 'used_memory', 'gpu_uuid', 'gpu_bus_id'];
    assert.deepEqual(parseComputeApps(read(H100, 'compute-apps.loaded.txt'), fields), expected);
    assert.deepEqual(parseComputeApps(read(H100, 'compute-apps.noheader-nounits.loaded.txt'), fields), expected);
    assert.equal(parseComputeApps(read(TWO_GPU, 'compute-apps.noheader-nounits.txt')).at(-1)?.gpuUuid, 'GPU-5f3e2a10-7c44-4b1e-9d2a-0c6b1e8f7a21');
  });

  it('learns which fields the driver accepts, aliases included', () => {
    const gpu = parseSupportedFields(read(H100, 'help-query-gpu.txt'));
    for (const field of GPU_FIELDS) assert.ok(gpu.has(field), field);
    assert.ok(gpu.has('gpu_name') && gpu.has('gpu_uuid'));
    assert.ok(!gpu.has('memory.imaginary'));
    const apps = parseSupportedFields(read(H100, 'help-query-compute-apps.txt'));
    for (const field of ['pid', 'process_name', 'used_memory', 'used_gpu_memory', 'gpu_uuid']) assert.ok(apps.has(field), field);
  });

  it('names the same GPUs as nvidia-smi -L', () => {
    for (const dir of [H100, TWO_GPU]) {
      const listed = [...read(dir, 'nvidia-smi-L.txt').matchAll(/^GPU (\d+): (.+) \(UUID: ([^)]+)\)$/gm)].map((m) => [Number(m[1]), m[2], m[3]]);
      const file = dir === H100 ? 'query-gpu.noheader-nounits.idle.txt' : 'query-gpu.noheader-nounits.txt';
      const parsed = parseGpuQuery(read(dir, file), dir === H100 ? FIXTURE_FIELDS : GPU_FIELDS).map((g) => [g.index, g.name, g.uuid]);
      assert.deepEqual(parsed, listed);
    }
  });

  it('agrees with nvidia-smi’s other views of the same moments (table, -q, -q -x, dmon)', () => {
    // The human table: "28287MiB /  81559MiB" and the process list.
    for (const [table, csv] of [
      ['nvidia-smi.txt', 'query-gpu.csv.idle.txt'],
      ['nvidia-smi.loaded.txt', 'query-gpu.csv.loaded.txt'],
    ] as const) {
      const match = /(\d+)MiB \/\s+(\d+)MiB/.exec(read(H100, table));
      const reading = only(parseGpuQuery(read(H100, csv), FIXTURE_FIELDS));
      assert.equal(Number(match?.[1]) * MIB, reading.memoryUsedBytes, table);
      assert.equal(Number(match?.[2]) * MIB, reading.memoryTotalBytes, table);
    }
    const tableProcesses = [...read(H100, 'nvidia-smi.loaded.txt').matchAll(/\s(\d+)\s+C\s+\S+\s+(\d+)MiB/g)].map((m) => [Number(m[1]), Number(m[2]) * MIB]);
    const apps = parseComputeApps(read(H100, 'compute-apps.loaded.txt'), ['pid', 'process_name', 'used_memory', 'gpu_uuid', 'gpu_bus_id']);
    assert.deepEqual(tableProcesses.sort(), apps.map((a) => [a.pid, a.usedMemoryBytes]).sort());
    // -q -x lists the same processes, and -q the same reserved memory.
    const xml = read(H100, 'nvidia-smi-q-x.loaded.xml');
    const xmlProcesses = [...xml.matchAll(/<pid>(\d+)<\/pid>[\s\S]*?<used_memory>(\d+) MiB<\/used_memory>/g)].map((m) => [Number(m[1]), Number(m[2]) * MIB]);
    assert.deepEqual(xmlProcesses.sort(), apps.map((a) => [a.pid, a.usedMemoryBytes]).sort());
    assert.doesNotMatch(read(H100, 'nvidia-smi-q-x.idle.xml'), /<process_info>/);
    assert.match(read(H100, 'nvidia-smi-q.idle.txt'), /Reserved\s+: 480 MiB/);
    // dmon under load: power near the loaded query's draw.
    const dmonPower = read(H100, 'dmon.txt')
      .split('\n')
      .filter((l) => /^\s+0\s/.test(l))
      .map((l) => Number(l.trim().split(/\s+/)[1]));
    assert.equal(dmonPower.length, 3);
    for (const watts of dmonPower) assert.ok(Math.abs(watts - 699) <= 2);
  });

  it('justifies one long-lived process: a fresh nvidia-smi per poll would cost over 1% of a core at 1 Hz', () => {
    const timing = read(H100, 'spawn-time-5x.txt');
    const seconds = (label: string): number => {
      const match = new RegExp(`${label}\\s+(\\d+)m([\\d.]+)s`).exec(timing);
      return Number(match?.[1]) * 60 + Number(match?.[2]);
    };
    const cpuPerCall = (seconds('user') + seconds('sys')) / 5;
    assert.ok(cpuPerCall > 0.01, `a spawn costs ${cpuPerCall * 1000} ms of CPU`);
    // The capture machine was Linux, where the /proc-based placement join works.
    assert.match(read(H100, 'which.txt'), /Linux .* x86_64/);
  });
});
