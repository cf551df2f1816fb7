// The three Grafana dashboards of a copilot-bridge cluster, built with Grafana's foundation SDK.
// `npm run deploy:dashboards` writes them to deploy/grafana/dashboards/*.json (committed; the
// deploy tests check the files are current and that every Prometheus query returns data).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ReduceDataOptionsBuilder } from '@grafana/grafana-foundation-sdk/common';
import {
  ConstantVariableBuilder,
  DashboardBuilder,
  DashboardCursorSync,
  QueryVariableBuilder,
  RowBuilder,
  TextBoxVariableBuilder,
  VariableRefresh,
  type Dashboard,
} from '@grafana/grafana-foundation-sdk/dashboard';
import { PanelBuilder as LogsPanel } from '@grafana/grafana-foundation-sdk/logs';
import { DataqueryBuilder as LokiQuery } from '@grafana/grafana-foundation-sdk/loki';
import { PanelBuilder as PieChartPanel } from '@grafana/grafana-foundation-sdk/piechart';
import { DataqueryBuilder as PromQuery } from '@grafana/grafana-foundation-sdk/prometheus';
import { PanelBuilder as StatPanel } from '@grafana/grafana-foundation-sdk/stat';
import { PanelBuilder as TimeseriesPanel } from '@grafana/grafana-foundation-sdk/timeseries';

/** The datasources provisioning/datasources/datasources.yml creates, by uid. */
export const PROMETHEUS = { type: 'prometheus', uid: 'copilot-bridge-prometheus' } as const;
export const LOKI = { type: 'loki', uid: 'copilot-bridge-loki' } as const;

/** Every panel filters on the instances picked here (all by default). */
const INSTANCE = '{instance=~"$instance"}';
const instanceVariable = (): QueryVariableBuilder =>
  new QueryVariableBuilder('instance')
    .label('Instance')
    .datasource(PROMETHEUS)
    .query('label_values(up{job="copilot-bridge"}, instance)')
    .refresh(VariableRefresh.OnTimeRangeChanged)
    .multi(true)
    .includeAll(true)
    .allValue('.*');

const prom = (expr: string, legend = '__auto'): PromQuery => new PromQuery().datasource(PROMETHEUS).expr(expr).legendFormat(legend);

function timeseries(title: string, unit: string, targets: PromQuery[], description = ''): TimeseriesPanel {
  const panel = new TimeseriesPanel().title(title).datasource(PROMETHEUS).unit(unit).height(8).span(12).fillOpacity(10);
  if (description !== '') panel.description(description);
  for (const target of targets) panel.withTarget(target);
  return panel;
}

function stat(title: string, unit: string, target: PromQuery, description: string): StatPanel {
  return new StatPanel()
    .title(title)
    .description(description)
    .datasource(PROMETHEUS)
    .unit(unit)
    .height(5)
    .span(6)
    .reduceOptions(new ReduceDataOptionsBuilder().calcs(['lastNotNull']))
    .withTarget(target.instant());
}

function dashboard(uid: string, title: string, description: string): DashboardBuilder {
  return new DashboardBuilder(title)
    .uid(uid)
    .description(description)
    .tags(['copilot-bridge', 'generated'])
    .editable()
    .tooltip(DashboardCursorSync.Crosshair)
    .refresh('30s')
    .time({ from: 'now-6h', to: 'now' })
    .timezone('browser')
    .withVariable(instanceVariable());
}

const quantile = (q: number, bucket: string, by: string): string => `histogram_quantile(${q}, sum by (${by}) (rate(${bucket}${INSTANCE}[$__rate_interval])))`;

function overview(): Dashboard {
  const requests = `copilot_bridge_requests_total${INSTANCE}`;
  return (
    dashboard('copilot-bridge-overview', 'copilot-bridge / Overview', 'Traffic, latency, errors and models of the whole cluster.')
      .withRow(new RowBuilder('Traffic'))
      .withPanel(
        timeseries(
          'Request rate',
          'reqps',
          [prom(`sum by (instance) (instance:copilot_bridge_requests:rate5m${INSTANCE})`, '{{instance}}')],
          'Routed requests per second, per instance (5 minute average).',
        ),
      )
      .withPanel(
        timeseries(
          'Latency (p50, p95, p99)',
          's',
          [
            prom(quantile(0.5, 'copilot_bridge_response_time_seconds_bucket', 'le'), 'p50'),
            prom(quantile(0.95, 'copilot_bridge_response_time_seconds_bucket', 'le'), 'p95'),
            prom(quantile(0.99, 'copilot_bridge_response_time_seconds_bucket', 'le'), 'p99'),
          ],
          'Time from request to the end of the answer, of requests that ran to their end (ghost text the client cancelled is not timed).',
        ),
      )
      .withPanel(
        timeseries(
          'Error rate',
          'percent',
          [prom(`100 * sum(rate(copilot_bridge_errors_total${INSTANCE}[$__rate_interval])) / sum(rate(${requests}[$__rate_interval]))`, 'errors %')],
          'Share of routed requests that ended in an error.',
        ),
      )
      .withPanel(
        new PieChartPanel()
          .title('Model usage')
          .description('Requests per model over the selected time range.')
          .datasource(PROMETHEUS)
          .height(8)
          .span(12)
          .reduceOptions(new ReduceDataOptionsBuilder().calcs(['lastNotNull']))
          .withTarget(prom(`sum by (model) (increase(${requests}[$__range]))`, '{{model}}').instant()),
      )
      .withRow(new RowBuilder('Health'))
      .withPanel(
        stat(
          'Backends up',
          'none',
          prom(`sum(copilot_bridge_backend_up${INSTANCE})`),
          'Ollama backends that can take traffic, counted once per instance that uses them.',
        ),
      )
      .withPanel(stat('Instances up', 'none', prom('sum(up{job="copilot-bridge", instance=~"$instance"})'), 'Bridge instances answering scrapes.'))
      .withPanel(
        stat(
          'Limit store failures',
          'none',
          prom(`sum(increase(copilot_bridge_limit_store_failures_total${INSTANCE}[$__range]))`),
          'Calls to the shared limit counters (Redis, limits.redis_url) that failed in the selected range: meanwhile requests went through without rate, token or concurrency limits.',
        ),
      )
      // A row of its own: the builder places a panel after the last one without wrapping, and a
      // full-width panel there would start at column 12 of 24.
      .withRow(new RowBuilder('Logs'))
      .withPanel(
        new LogsPanel()
          .title('Warnings and errors')
          .description('The bridges’ JSON log (Loki, shipped by Grafana Alloy): warn level and above.')
          .datasource(LOKI)
          .height(10)
          .span(24)
          .withTarget(new LokiQuery().datasource(LOKI).expr('{service_name="copilot-bridge", instance=~"$instance", level=~"warn|error|fatal"} | json')),
      )
      .build()
  );
}

function performance(): Dashboard {
  return dashboard('copilot-bridge-performance', 'copilot-bridge / Performance', 'Response times by complexity tier, GPUs and throughput.')
    .withRow(new RowBuilder('Response time'))
    .withPanel(
      timeseries(
        'Response time by complexity tier (p95)',
        's',
        [prom(`histogram_quantile(0.95, sum by (tier, le) (instance_tier:copilot_bridge_response_time_seconds_bucket:rate5m${INSTANCE}))`, '{{tier}}')],
        'Whole-answer time per tier (5 minute window), of requests that ran to their end (ghost text the client cancelled is not timed).',
      ),
    )
    .withPanel(
      timeseries(
        'Time to first token by tier (p95)',
        's',
        [prom(quantile(0.95, 'copilot_bridge_time_to_first_token_seconds_bucket', 'tier, le'), '{{tier}}')],
        'What a user waits before the first token shows.',
      ),
    )
    .withRow(new RowBuilder('GPUs'))
    .withPanel(
      timeseries(
        'GPU utilization',
        'percentunit',
        [prom(`gpu_utilization_ratio${INSTANCE}`, '{{instance}} GPU {{gpu}}')],
        'Busy share of each GPU the bridges monitor (nvidia-smi).',
      ),
    )
    .withPanel(
      timeseries('VRAM usage', 'bytes', [
        prom(`gpu_memory_used_bytes${INSTANCE}`, '{{instance}} GPU {{gpu}} used'),
        prom(`gpu_memory_total_bytes${INSTANCE}`, '{{instance}} GPU {{gpu}} total'),
      ]),
    )
    .withRow(new RowBuilder('Throughput'))
    .withPanel(
      timeseries(
        'Tokens generated per second',
        'none',
        [prom('sum by (model) (instance_model:copilot_bridge_tokens:rate5m{instance=~"$instance", direction="out"})', '{{model}}')],
        'Generated tokens per second per model.',
      ),
    )
    .withPanel(
      timeseries(
        'Requests per backend',
        'reqps',
        [prom(`sum by (backend) (rate(copilot_bridge_requests_total${INSTANCE}[$__rate_interval]))`, '{{backend}}')],
        'How the load spreads over the Ollama nodes.',
      ),
    )
    .withPanel(
      timeseries(
        'Backend availability',
        'none',
        [prom(`copilot_bridge_backend_up${INSTANCE}`, '{{instance}} {{backend}}')],
        '1 when an instance can use the backend.',
      ),
    )
    .build();
}

/**
 * Cloud-equivalent prices and the assumptions of the business figures; editable on the dashboard.
 * Prices: USD per million tokens, list prices of a GPT-4o class model (deploy/README.md).
 */
const BUSINESS_ASSUMPTIONS = [
  { name: 'price_in_per_mtok', label: 'Cloud price, input (USD / 1M tokens)', value: '2.50' },
  { name: 'price_out_per_mtok', label: 'Cloud price, output (USD / 1M tokens)', value: '10.00' },
  { name: 'developers', label: 'Developers', value: '30' },
  { name: 'minutes_saved_per_request', label: 'Minutes saved per answered request', value: '0.5' },
  { name: 'infra_cost_per_month', label: 'Cluster cost (USD / month)', value: '1500' },
] as const;

function business(): Dashboard {
  const tokens = (direction: 'in' | 'out', window: string): string =>
    `sum(increase(copilot_bridge_tokens_total{instance=~"$instance", direction="${direction}"}[${window}]))`;
  const saved = (window: string): string => `(${tokens('in', window)} * $price_in_per_mtok + ${tokens('out', window)} * $price_out_per_mtok) / 1e6`;
  // outcome "ok": answered in full; a request the client left (ghost text) has status 200 too.
  const answered = `sum(increase(copilot_bridge_requests_total{instance=~"$instance", outcome="ok"}[$__range]))`;
  const builder = dashboard(
    'copilot-bridge-business',
    'copilot-bridge / Business',
    'What local models save against a cloud LLM: estimates from token counts and the assumptions above.',
  );
  for (const assumption of BUSINESS_ASSUMPTIONS) {
    builder.withVariable(new TextBoxVariableBuilder(assumption.name).label(assumption.label).defaultValue(assumption.value));
  }
  return builder
    .withVariable(new ConstantVariableBuilder('seconds_per_month').value('2592000'))
    .withRow(new RowBuilder('Savings'))
    .withPanel(stat('Cost saved', 'currencyUSD', prom(saved('$__range')), 'What the tokens of the selected range would have cost at the cloud prices above.'))
    .withPanel(
      stat(
        'Time saved per developer',
        'h',
        prom(`${answered} * $minutes_saved_per_request / 60 / $developers`),
        'Answered requests x minutes saved each, shared by the developers.',
      ),
    )
    .withPanel(
      stat(
        'ROI',
        'percentunit',
        prom(`${saved('$__range')} * ($seconds_per_month / $__range_s) / $infra_cost_per_month`),
        'Cost saved, scaled to a month, over what the cluster costs a month.',
      ),
    )
    .withPanel(
      stat('Tokens served', 'short', prom(`${tokens('in', '$__range')} + ${tokens('out', '$__range')}`), 'Prompt and generated tokens in the selected range.'),
    )
    .withPanel(timeseries('Cost saved per hour', 'currencyUSD', [prom(saved('1h'), 'USD saved in the last hour')]))
    .withRow(new RowBuilder("By team (the bridges' own accounting)"))
    .withPanel(
      timeseries(
        'Requests per minute by team',
        'none',
        [prom(`60 * sum by (team) (rate(copilot_bridge_identity_requests_total${INSTANCE}[$__rate_interval]))`, '{{team}}')],
        'Requests for a model (each one the history records), by the team of the key or token that sent it ("none": no team, "other": a team the config does not list).',
      ),
    )
    .withPanel(
      timeseries(
        'Saved by team',
        'currencyUSD',
        [prom(`sum by (team) (increase(copilot_bridge_cost_saved_dollars_total${INSTANCE}[1h]))`, '{{team}}')],
        "Per hour: for each request, what its tokens would have cost at the cloud prices of the bridges' accounting settings, less its measured GPU energy at accounting.kwh_price (a request whose energy cost more adds nothing).",
      ),
    )
    .withPanel(
      timeseries(
        'GPU energy by team',
        'kwatth',
        [prom(`sum by (team) (increase(copilot_bridge_energy_joules_total${INSTANCE}[1h])) / 3.6e6`, '{{team}}')],
        "Per hour: each request's share of its GPU's measured power while it ran (zero where the bridges see no GPU).",
      ),
    )
    .withRow(new RowBuilder('Usage patterns'))
    .withPanel(
      timeseries(
        'Requests per minute by tier',
        'none',
        [prom(`60 * sum by (tier) (rate(copilot_bridge_requests_total${INSTANCE}[$__rate_interval]))`, '{{tier}}')],
        'simple: inline completions and small edits; complex: design and long context.',
      ),
    )
    .withPanel(
      new PieChartPanel()
        .title('Requests by tier')
        .datasource(PROMETHEUS)
        .height(8)
        .span(12)
        .reduceOptions(new ReduceDataOptionsBuilder().calcs(['lastNotNull']))
        .withTarget(prom(`sum by (tier) (increase(copilot_bridge_requests_total${INSTANCE}[$__range]))`, '{{tier}}').instant()),
    )
    .build();
}

/** File name (in deploy/grafana/dashboards) to dashboard. */
export function dashboards(): Record<string, Dashboard> {
  return { 'overview.json': overview(), 'performance.json': performance(), 'business.json': business() };
}

/** The text written for a dashboard, so the check and the writer agree to the byte. */
export function dashboardText(model: Dashboard): string {
  return `${JSON.stringify(model, null, 2)}\n`;
}

export const DASHBOARD_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dashboards');

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [file, model] of Object.entries(dashboards())) writeFileSync(path.join(DASHBOARD_DIR, file), dashboardText(model));
}
