import { useEffect, useMemo, useRef, useState, type JSX } from 'react';
import { gpuPoint, type BridgeState, type GpuPoint, type GpuReading, type Placement } from '../../../src/contract';
import { getGpuHistory } from '../api';
import { TimeChart } from '../components/TimeChart';
import { gib, percent, percentOf } from '../format';

const SEGMENT_COLORS = ['var(--seg1)', 'var(--seg2)', 'var(--seg3)', 'var(--seg4)'];
const WINDOWS = [
  { label: '10 min', minutes: 10 },
  { label: '1 hour', minutes: 60 },
] as const;

/** GPU history: loaded once per window, then extended from the live samples in the state. */
function useGpuHistory(state: BridgeState, minutes: number): Record<string, GpuPoint[]> {
  const [points, setPoints] = useState<Record<string, GpuPoint[]>>({});
  const lastSample = useRef<string | null>(null);
  useEffect(() => {
    let cancelled = false;
    void getGpuHistory(minutes).then((h) => !cancelled && setPoints(h));
    return () => {
      cancelled = true;
    };
  }, [minutes]);
  useEffect(() => {
    const at = state.gpu.lastSampleAt;
    if (at === null || at === lastSample.current) return;
    lastSample.current = at;
    const t = Date.parse(at);
    setPoints((current) => {
      const next: Record<string, GpuPoint[]> = {};
      for (const gpu of state.gpu.gpus) {
        const kept = (current[gpu.index] ?? []).filter((p) => p.t >= t - minutes * 60_000 && p.t < t);
        next[gpu.index] = [...kept, gpuPoint(gpu, t)];
      }
      return next;
    });
  }, [state.gpu.lastSampleAt, state.gpu.gpus, minutes]);
  return points;
}

function VramBar({ gpu, placements }: { gpu: GpuReading; placements: Placement[] }): JSX.Element {
  const total = gpu.memoryTotalBytes ?? 0;
  const used = gpu.memoryUsedBytes ?? 0;
  const models = placements.filter((p) => p.gpu?.index === gpu.index).flatMap((p) => p.models.map((m) => ({ ...m, backend: p.backend })));
  const inModels = models.reduce((sum, m) => sum + m.vramBytes, 0);
  const other = Math.max(0, used - inModels);
  const width = (bytes: number): string => `${total > 0 ? (bytes / total) * 100 : 0}%`;
  return (
    <div className="vram">
      <div className="bar" role="meter" aria-label={`GPU ${gpu.index} memory`} aria-valuemin={0} aria-valuemax={total} aria-valuenow={used}>
        {models.map((m, i) => (
          <span
            key={`${m.backend}-${m.name}`}
            className="segment"
            style={{ width: width(m.vramBytes), background: SEGMENT_COLORS[i % SEGMENT_COLORS.length] }}
            title={`${m.name} (${m.backend}): ${gib(m.vramBytes)}`}
          />
        ))}
        {other > 0 && <span className="segment other" style={{ width: width(other) }} title={`other processes: ${gib(other)}`} />}
      </div>
      <div className="bar-label" data-testid={`vram-${gpu.index}`}>
        {/* The figures as reported: one nvidia-smi cannot read is unknown ('–'), not 0 GiB. */}
        <strong>{gib(gpu.memoryUsedBytes)}</strong> used of {gib(gpu.memoryTotalBytes)}
        {gpu.memoryReservedBytes ? <span className="muted"> · {gib(gpu.memoryReservedBytes)} reserved</span> : null}
      </div>
      {models.length > 0 && (
        <ul className="resident">
          {models.map((m, i) => (
            <li key={`${m.backend}-${m.name}`}>
              <span className="swatch" style={{ background: SEGMENT_COLORS[i % SEGMENT_COLORS.length] }} />
              {m.name} <span className="muted">on {m.backend}</span> <span className="num">{gib(m.vramBytes)}</span>
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function GpuCard({ gpu, placements, points }: { gpu: GpuReading; placements: Placement[]; points: GpuPoint[] }): JSX.Element {
  const series = useMemo(() => {
    return [
      { label: 'VRAM', stroke: 'var(--accent)', values: points.map((p) => percentOf(p.memoryUsedBytes, gpu.memoryTotalBytes)) },
      { label: 'Utilization', stroke: 'var(--accent2)', values: points.map((p) => (p.utilizationRatio === null ? null : p.utilizationRatio * 100)) },
    ];
  }, [points, gpu.memoryTotalBytes]);
  const times = useMemo(() => points.map((p) => p.t / 1000), [points]);
  return (
    <section className="card gpu" data-testid={`gpu-${gpu.index}`} aria-label={`GPU ${gpu.index}`}>
      <header>
        <h2>
          GPU {gpu.index} <span className="muted">· {gpu.name ?? 'unknown'}</span>
        </h2>
        <code className="uuid">{gpu.uuid}</code>
      </header>
      <VramBar gpu={gpu} placements={placements} />
      <dl className="stats">
        <div>
          <dt>Utilization</dt>
          <dd data-testid={`util-${gpu.index}`}>{percent(gpu.utilizationRatio)}</dd>
        </div>
        <div>
          <dt>Temperature</dt>
          <dd data-testid={`temp-${gpu.index}`}>{gpu.temperatureCelsius === null ? '–' : `${gpu.temperatureCelsius} °C`}</dd>
        </div>
        <div>
          <dt>Power</dt>
          <dd data-testid={`power-${gpu.index}`}>
            {gpu.powerWatts === null ? 'n/a' : `${Math.round(gpu.powerWatts)} W`}
            {gpu.powerLimitWatts === null ? '' : ` / ${Math.round(gpu.powerLimitWatts)} W`}
          </dd>
        </div>
        <div>
          <dt>State</dt>
          <dd>
            {gpu.pstate ?? '–'} · {gpu.graphicsClockMhz ?? '–'} MHz
          </dd>
        </div>
      </dl>
      <TimeChart times={times} series={series} label={`GPU ${gpu.index} VRAM and utilization over time`} />
    </section>
  );
}

/**
 * A reading as it may be shown: once nvidia-smi fails its last figures are no measure of the GPU
 * now (the tray and the metrics leave them out too), so only what does not change stays.
 */
function shown(reading: GpuReading, live: boolean): GpuReading {
  if (live) return reading;
  return {
    ...reading,
    memoryUsedBytes: null,
    memoryFreeBytes: null,
    memoryReservedBytes: null,
    utilizationRatio: null,
    memoryUtilizationRatio: null,
    temperatureCelsius: null,
    powerWatts: null,
    graphicsClockMhz: null,
    memoryClockMhz: null,
    pstate: null,
  };
}

export function GpuView({ state }: { state: BridgeState }): JSX.Element {
  const [windowMinutes, setWindowMinutes] = useState(10);
  const points = useGpuHistory(state, windowMinutes);
  const { gpu } = state;
  return (
    <div className="view">
      <div className="toolbar">
        <h1>GPUs</h1>
        <span className="muted">{gpu.message}</span>
        <div className="segmented" role="group" aria-label="Chart window">
          {WINDOWS.map((w) => (
            <button key={w.minutes} aria-pressed={windowMinutes === w.minutes} onClick={() => setWindowMinutes(w.minutes)}>
              {w.label}
            </button>
          ))}
        </div>
      </div>
      {gpu.system !== null && (
        <p className="system muted" data-testid="system">
          RAM {gib(gpu.system.memoryUsedBytes)} of {gib(gpu.system.memoryTotalBytes)} · CPU {percent(gpu.system.cpuLoadRatio)}
        </p>
      )}
      {gpu.gpus.length === 0 ? (
        <section className="card notice" data-testid="no-gpu">
          <h2>{gpu.source === 'systeminformation' ? 'No live GPU figures' : 'No NVIDIA GPU'}</h2>
          <p>{gpu.message}</p>
          {gpu.controllers.length > 0 && (
            <ul>
              {gpu.controllers.map((c) => (
                <li key={`${c.vendor}-${c.model}`}>
                  {c.vendor} {c.model}
                </li>
              ))}
            </ul>
          )}
        </section>
      ) : (
        <div className="grid">
          {gpu.gpus.map((g) => (
            <GpuCard key={g.index} gpu={shown(g, gpu.live)} placements={state.placements} points={points[g.index] ?? []} />
          ))}
        </div>
      )}
    </div>
  );
}
