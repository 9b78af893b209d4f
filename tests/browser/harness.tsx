/**
 * Renders the plugin's editors outside Grafana for the browser test. Resource calls that Grafana
 * would route to the plugin backend go straight to the Prometheus-compatible API named by `?api=`.
 */
import { DataSourceInstanceSettings, DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { DataSourceSrv, setDataSourceSrv } from '@grafana/runtime';
import { Stack, useTheme2 } from '@grafana/ui';
import React, { useMemo, useState } from 'react';
import { createRoot } from 'react-dom/client';

import { ConfigEditor } from '../../src/components/ConfigEditor';
import { QueryEditor } from '../../src/components/QueryEditor';
import { DataSource } from '../../src/datasource';
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

function Harness() {
  const [options, setOptions] = useState({ uid: 'spangraph', name: 'Spangraph', jsonData: {} } as Options);
  const [query, setQuery] = useState<SpangraphQuery>({ refId: 'A' });
  const [runs, setRuns] = useState(0);
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
      <pre data-testid="state">{JSON.stringify({ jsonData: options.jsonData, query, runs }, null, 2)}</pre>
    </Stack>
  );
}

createRoot(document.getElementById('root')!).render(<Harness />);
