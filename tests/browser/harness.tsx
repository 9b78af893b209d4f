/**
 * Renders the plugin's editors outside Grafana for the browser test. Resource calls that Grafana
 * would route to the plugin backend go straight to the Prometheus-compatible API named by `?api=`.
 */
import {
  CoreApp,
  DataFrame,
  DataFrameType,
  DataQueryRequest,
  DataSourceInstanceSettings,
  DataSourcePluginOptionsEditorProps,
  FieldType,
} from '@grafana/data';
import { DataSourceSrv, setDataSourceSrv } from '@grafana/runtime';
import { Stack, useTheme2 } from '@grafana/ui';
import React, { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';

import { ConfigEditor } from '../../src/components/ConfigEditor';
import { QueryEditor } from '../../src/components/QueryEditor';
import { DataSource } from '../../src/datasource';
import { transformPromQLResponse } from '../../src/resultTransformer';
import { SpangraphOptions, SpangraphQuery } from '../../src/types';

const api = (new URLSearchParams(window.location.search).get('api') ?? '').replace(/\/$/, '');

class HarnessDataSource extends DataSource {
  async getResource<T>(path: string, params?: Record<string, string | number>): Promise<T> {
    const query = new URLSearchParams(Object.entries(params ?? {}).map(([k, v]) => [k, String(v)]));
    const res = await fetch(`${api}/${path}${query.size ? `?${query}` : ''}`);
    return res.json();
  }
}

// The config editor's traces picker asks Grafana's DataSourceSrv for tracing data sources.
const tempo = {
  uid: 'tempo',
  name: 'Tempo',
  type: 'tempo',
  meta: { info: { logos: { small: '' } } },
} as unknown as DataSourceInstanceSettings;
setDataSourceSrv({
  getList: () => [tempo],
  // Grafana resolves an empty ref to its default data source; Tempo stands in for that here.
  getInstanceSettings: (ref: unknown) => (ref == null || ref === tempo.uid || ref === tempo.name ? tempo : undefined),
} as unknown as DataSourceSrv);

type Options = DataSourcePluginOptionsEditorProps<SpangraphOptions>['options'];

interface PromVector {
  data: { resultType: string; result: Array<{ metric: Record<string, string>; value: [number, string] }> };
}

/**
 * Explore's run of an instant query: the API's vector as the backend frames it (one numeric frame per series,
 * resultType vector; pkg/plugin's golden frames pin that shape), then shaped by the frontend as Explore shows it.
 */
async function runInExplore(query: SpangraphQuery): Promise<DataFrame[]> {
  const res = await fetch(`${api}/api/v1/query?${new URLSearchParams({ query: query.expr ?? '' })}`);
  const body: PromVector = await res.json();
  const frames: DataFrame[] = body.data.result.map((s) => ({
    refId: query.refId,
    meta: { type: DataFrameType.NumericMulti, typeVersion: [0, 1], custom: { resultType: 'vector' } },
    length: 1,
    fields: [
      { name: 'Time', type: FieldType.time, config: {}, values: [s.value[0] * 1000] },
      {
        name: s.metric.__name__ ?? 'Value',
        type: FieldType.number,
        config: {},
        labels: s.metric,
        values: [+s.value[1]],
      },
    ],
  }));
  const request = { app: CoreApp.Explore, targets: [query] } as DataQueryRequest<SpangraphQuery>;
  return transformPromQLResponse({ data: frames }, request).data;
}

function ResultTable({ frames }: { frames: DataFrame[] }) {
  return (
    <>
      {frames.map((frame, i) => (
        <table key={i} data-testid="explore-table">
          <thead>
            <tr>
              {frame.fields.map((f) => (
                <th key={f.name}>{f.name}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {Array.from({ length: frame.length }, (_, row) => (
              <tr key={row}>
                {frame.fields.map((f) => (
                  <td key={f.name}>{String(f.values[row])}</td>
                ))}
              </tr>
            ))}
          </tbody>
        </table>
      ))}
    </>
  );
}

function Harness() {
  const [options, setOptions] = useState({ uid: 'spangraph', name: 'Spangraph', jsonData: {} } as Options);
  const [query, setQuery] = useState<SpangraphQuery>({ refId: 'A' });
  const [runs, setRuns] = useState(0);
  const [alertQuery, setAlertQuery] = useState<SpangraphQuery>({ refId: 'A' });
  const [exploreQuery, setExploreQuery] = useState<SpangraphQuery>({ refId: 'A', instant: true, range: false });
  const [exploreFrames, setExploreFrames] = useState<DataFrame[]>([]);
  const datasource = useMemo(
    () => new HarnessDataSource({ uid: 'spangraph', jsonData: {} } as DataSourceInstanceSettings<SpangraphOptions>),
    []
  );
  const theme = useTheme2();
  return (
    <Stack direction="column" gap={3}>
      {/* The bits of Grafana's global stylesheet that the editors' layout relies on. */}
      <style>{`
        *, *::before, *::after { box-sizing: border-box; }
        body { background: ${theme.colors.background.primary}; color: ${theme.colors.text.primary}; font-family: ${theme.typography.fontFamily}; }
      `}</style>
      <section data-testid="config-editor">
        <ConfigEditor options={options} onOptionsChange={setOptions} />
      </section>
      <section data-testid="query-editor">
        <QueryEditor
          datasource={datasource}
          query={query}
          onChange={setQuery}
          onRunQuery={() => setRuns((n) => n + 1)}
        />
      </section>
      <section data-testid="alert-editor">
        <QueryEditor
          datasource={datasource}
          query={alertQuery}
          onChange={setAlertQuery}
          onRunQuery={() => {}}
          app={CoreApp.UnifiedAlerting}
        />
      </section>
      <section data-testid="explore-editor">
        <QueryEditor
          datasource={datasource}
          query={exploreQuery}
          onChange={setExploreQuery}
          onRunQuery={() => runInExplore(exploreQuery).then(setExploreFrames)}
          app={CoreApp.Explore}
        />
        <ResultTable frames={exploreFrames} />
      </section>
      <pre data-testid="state">{JSON.stringify({ jsonData: options.jsonData, query, alertQuery, runs }, null, 2)}</pre>
    </Stack>
  );
}

createRoot(document.getElementById('root')!).render(<Harness />);
