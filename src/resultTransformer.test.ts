import {
  CoreApp,
  DataFrame,
  DataFrameJSON,
  dataFrameFromJSON,
  DataQueryRequest,
  DataTopic,
  FieldType,
  toDataFrame,
} from '@grafana/data';
import { readFileSync } from 'fs';
import { join } from 'path';

import { transformPromQLResponse } from './resultTransformer';
import { SpangraphQuery } from './types';

/**
 * The backend's golden frames (pkg/plugin/testdata, written by its TestGoldenFrames), as Grafana hands them to the
 * frontend: the response's frames with the query's refId.
 */
function golden(name: string, refId = 'A'): DataFrame[] {
  const text = readFileSync(join(__dirname, '..', 'pkg', 'plugin', 'testdata', `${name}.jsonc`), 'utf8');
  const json = JSON.parse(
    text
      .split('\n')
      .filter((l) => !l.startsWith('//'))
      .join('\n')
  );
  return json.frames.map((f: DataFrameJSON) => ({ ...dataFrameFromJSON(f), refId }));
}

function request(app: CoreApp, ...targets: SpangraphQuery[]): DataQueryRequest<SpangraphQuery> {
  return { app, targets } as DataQueryRequest<SpangraphQuery>;
}

const names = (frame: DataFrame) => frame.fields.map((f) => f.name);

describe('transformPromQLResponse', () => {
  it('shows an instant query in Explore as a table, as the Prometheus datasource does', () => {
    const frames = golden('promql_instant');
    const out = transformPromQLResponse({ data: frames }, request(CoreApp.Explore, { refId: 'A', instant: true }));
    expect(out.data).toHaveLength(1);
    const table: DataFrame = out.data[0];
    expect(names(table)).toEqual(['Time', 'service', 'Value']);
    expect(table.fields[1].values).toEqual(['cart', 'payment']);
    expect(table.fields[1].config.filterable).toBe(true);
    expect(table.meta?.custom?.resultType).toBe('vector');
    expect(table.length).toBe(2);
  });

  it('leaves an instant query in a dashboard as numbers', () => {
    const frames = golden('promql_instant');
    const out = transformPromQLResponse({ data: frames }, request(CoreApp.Dashboard, { refId: 'A', instant: true }));
    expect(out.data).toHaveLength(2);
    expect(out.data.map((f: DataFrame) => f.meta?.type)).toEqual(['numeric-multi', 'numeric-multi']);
  });

  it('names the value column by refId when several queries return tables, as the Tempo service map reads them', () => {
    const a = golden('promql_table', 'A');
    const b = golden('promql_metric_name_only', 'B');
    const out = transformPromQLResponse(
      { data: [...a, ...b] },
      request(CoreApp.Dashboard, { refId: 'A', format: 'table' }, { refId: 'B', format: 'table' })
    );
    expect(out.data.map(names)).toEqual([
      ['Time', 'service', 'Value #A'],
      ['Time', '__name__', 'Value #B'],
    ]);
  });

  it('passes exemplar frames through as annotations and leaves other query types alone', () => {
    const exemplars = golden('promql_exemplars');
    const graph = golden('service_graph', 'G');
    const out = transformPromQLResponse(
      { data: [...exemplars, ...graph] },
      request(CoreApp.Dashboard, { refId: 'A', exemplar: true }, { refId: 'G', queryType: 'serviceGraph' })
    );
    const annotations = out.data.filter((f: DataFrame) => f.meta?.dataTopic === DataTopic.Annotations);
    expect(annotations.map((f: DataFrame) => f.name)).toEqual(['exemplar']);
    expect(out.data.filter((f: DataFrame) => f.name === 'nodes' || f.name === 'edges')).toEqual(graph);
  });

  describe('heatmap format', () => {
    const t = [1000, 2000];
    const bucket = (service: string, le: string, values: number[], times = t) =>
      toDataFrame({
        refId: 'A',
        meta: { type: 'timeseries-multi', custom: { resultType: 'matrix' } },
        fields: [
          { name: 'Time', type: FieldType.time, values: times },
          { name: 'Value', type: FieldType.number, labels: { le, service }, values },
        ],
      });

    it('de-accumulates each histogram on its own, by bound, clamping float residue to 0', () => {
      const frames = [
        bucket('cart', '+Inf', [10, 4.5 - 1e-12]),
        bucket('cart', '0.1', [4, 4.5]),
        bucket('cart', '0.5', [10, 4.5 - 1e-12]),
        bucket('payment', '0.1', [1, 2]),
        bucket('payment', '+Inf', [3, 2]),
      ];
      const out = transformPromQLResponse(
        { data: frames },
        request(CoreApp.Dashboard, { refId: 'A', format: 'heatmap' })
      );
      expect(out.data).toHaveLength(2);
      const [cart, payment] = out.data as DataFrame[];
      expect(cart.meta?.type).toBe('heatmap-rows');
      expect(names(cart)).toEqual(['Time', '0.1', '0.5', '+Inf']);
      expect(cart.fields.slice(1).map((f) => f.values)).toEqual([
        [4, 4.5],
        [6, 0],
        [0, 0],
      ]);
      // Payment's buckets are never subtracted from cart's.
      expect(names(payment)).toEqual(['Time', '0.1', '+Inf']);
      expect(payment.fields.slice(1).map((f) => f.values)).toEqual([
        [1, 2],
        [2, 0],
      ]);
    });

    it('matches buckets by timestamp when a series misses a point', () => {
      const frames = [bucket('cart', '0.1', [4], [2000]), bucket('cart', '+Inf', [5, 7])];
      const out = transformPromQLResponse(
        { data: frames },
        request(CoreApp.Dashboard, { refId: 'A', format: 'heatmap' })
      );
      expect(out.data[0].fields.slice(1).map((f: { values: unknown[] }) => f.values)).toEqual([
        [null, 4],
        [5, 3],
      ]);
    });
  });
});
