import { useEffect, useRef, type JSX } from 'react';
import uPlot from 'uplot';

export interface Series {
  label: string;
  /** CSS color. */
  stroke: string;
  values: Array<number | null>;
}

/**
 * A streaming time chart (uPlot): times in seconds, values 0..100 (percent). Drag to zoom,
 * double-click to reset. Rebuilt only when the series change shape; new points update in place.
 */
export function TimeChart({ times, series, height = 140, label }: { times: number[]; series: Series[]; height?: number; label: string }): JSX.Element {
  const host = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const shape = series.map((s) => s.label).join('|');

  useEffect(() => {
    const element = host.current;
    if (element === null) return undefined;
    const styles = getComputedStyle(element);
    // The canvas does not understand CSS variables: resolve "var(--accent)" to the theme's color.
    const color = (value: string): string => {
      const name = /^var\((--[\w-]+)\)$/.exec(value)?.[1];
      return name === undefined ? value : styles.getPropertyValue(name).trim() || '#888';
    };
    const axis = {
      stroke: styles.getPropertyValue('--muted').trim() || '#888',
      grid: { stroke: styles.getPropertyValue('--grid').trim() || '#8883', width: 1 },
      ticks: { show: false },
    };
    const options: uPlot.Options = {
      width: Math.max(200, element.clientWidth),
      height,
      cursor: { drag: { x: true, y: false } },
      legend: { show: true, live: true },
      scales: { x: { time: true }, y: { range: [0, 100] } },
      axes: [axis, { ...axis, values: (_u, ticks) => ticks.map((t) => `${t}%`) }],
      series: [{}, ...series.map((s) => ({ label: s.label, stroke: color(s.stroke), width: 1.5, points: { show: false } }))],
    };
    const instance = new uPlot(options, [times, ...series.map((s) => s.values)] as uPlot.AlignedData, element);
    plot.current = instance;
    const resize = new ResizeObserver(() => instance.setSize({ width: Math.max(200, element.clientWidth), height }));
    resize.observe(element);
    return () => {
      resize.disconnect();
      instance.destroy();
      plot.current = null;
    };
    // Rebuild only when the set of series changes; data updates go through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [shape, height]);

  useEffect(() => {
    plot.current?.setData([times, ...series.map((s) => s.values)] as uPlot.AlignedData);
  }, [times, series]);

  return <div className="chart" ref={host} role="img" aria-label={label} />;
}
