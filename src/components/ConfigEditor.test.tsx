import { DataSourceInstanceSettings, DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { DataSourceSrv, setDataSourceSrv } from '@grafana/runtime';
import { fireEvent, render, screen } from '@testing-library/react';
import React from 'react';

import { SpangraphOptions } from '../types';
import { ConfigEditor } from './ConfigEditor';

const tempo = {
  uid: 'tempo-uid',
  name: 'Tempo',
  type: 'tempo',
  meta: { info: { logos: { small: '' } } },
} as unknown as DataSourceInstanceSettings;

const getList = jest.fn(() => [tempo]);

// The picker lists and resolves data sources (by name or uid) through the DataSourceSrv singleton.
setDataSourceSrv({
  getList,
  getInstanceSettings: (ref: unknown) => (ref === 'Tempo' || ref === 'tempo-uid' ? tempo : undefined),
} as unknown as DataSourceSrv);

type Options = DataSourcePluginOptionsEditorProps<SpangraphOptions>['options'];

function setup(jsonData: SpangraphOptions = {}) {
  const options = { uid: 'sg', name: 'Spangraph', jsonData, secureJsonFields: {} } as Options;
  const onOptionsChange = jest.fn();
  render(<ConfigEditor options={options} onOptionsChange={onOptionsChange} />);
  return { options, onOptionsChange };
}

describe('ConfigEditor', () => {
  it('writes the tenant into jsonData', () => {
    const { options, onOptionsChange } = setup({ defaultQueryType: 'redTable' });
    const tenant = screen.getByLabelText(/^Tenant/);
    expect(tenant).toHaveAttribute('placeholder', 'single-tenant');

    fireEvent.change(tenant, { target: { value: 'acme' } });
    expect(onOptionsChange).toHaveBeenCalledWith({
      ...options,
      jsonData: { defaultQueryType: 'redTable', tenant: 'acme' },
    });
  });

  it('offers only Tempo data sources, which run the TraceQL of the links, and stores the chosen uid', async () => {
    const { onOptionsChange } = setup({ tenant: 'acme' });
    expect(getList).toHaveBeenCalledWith(expect.objectContaining({ type: 'tempo' }));

    fireEvent.keyDown(screen.getByLabelText(/^Traces data source/), { key: 'ArrowDown' });
    fireEvent.click(await screen.findByText('Tempo'));
    expect(onOptionsChange).toHaveBeenCalledWith(
      expect.objectContaining({ jsonData: { tenant: 'acme', tracesDatasourceUid: 'tempo-uid' } })
    );
  });

  it('shows the configured traces data source and writes the default query type', () => {
    const { onOptionsChange } = setup({ tracesDatasourceUid: 'tempo-uid' });
    expect(screen.getByText('Tempo')).toBeInTheDocument();

    fireEvent.click(screen.getByLabelText('Service graph'));
    expect(onOptionsChange).toHaveBeenCalledWith(
      expect.objectContaining({ jsonData: { tracesDatasourceUid: 'tempo-uid', defaultQueryType: 'serviceGraph' } })
    );
  });

  it('writes the min interval, empty for the collection interval', () => {
    const { onOptionsChange } = setup({ timeInterval: '30s' });
    const field = screen.getByLabelText(/^Min interval/);
    expect(field).toHaveValue('30s');
    fireEvent.change(field, { target: { value: '' } });
    expect(onOptionsChange).toHaveBeenCalledWith(expect.objectContaining({ jsonData: { timeInterval: undefined } }));
  });
});
