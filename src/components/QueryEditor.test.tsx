import { startCompletion } from '@codemirror/autocomplete';
import { EditorView } from '@codemirror/view';
import { CoreApp, DataSourceInstanceSettings } from '@grafana/data';
import { act, cleanup, fireEvent, render, screen, within } from '@testing-library/react';
import React, { useState } from 'react';

import { DataSource } from '../datasource';
import { SpangraphOptions, SpangraphQuery } from '../types';
import { DatasourcePromClient } from '../promqlClient';
import { QueryEditor } from './QueryEditor';

const RESOURCES: Record<string, string[]> = {
  'api/v1/label/__name__/values': ['traces_spanmetrics_calls_total', 'traces_service_graph_request_total', 'up'],
  'api/v1/label/client/values': ['frontend', 'checkout'],
  'api/v1/label/server/values': ['checkout', 'payments'],
};

function setup(initial: SpangraphQuery, jsonData: SpangraphOptions = {}, app?: CoreApp) {
  const datasource = new DataSource({ uid: 'sg', jsonData } as DataSourceInstanceSettings<SpangraphOptions>);
  jest.spyOn(datasource, 'getResource').mockImplementation(async (path: string) => ({
    status: 'success',
    data: RESOURCES[path] ?? [],
  }));
  const onChange = jest.fn();
  const onRunQuery = jest.fn();
  // Grafana owns the query state; this stands in for it so the editor sees its own changes.
  function Host() {
    const [query, setQuery] = useState(initial);
    return (
      <QueryEditor
        datasource={datasource}
        query={query}
        onChange={(q) => {
          onChange(q);
          setQuery(q);
        }}
        onRunQuery={onRunQuery}
        app={app}
      />
    );
  }
  render(<Host />);
  return { onChange, onRunQuery };
}

describe('QueryEditor', () => {
  it('shows the PromQL editor by default', () => {
    setup({ refId: 'A' });
    expect(screen.getByRole('textbox', { name: 'PromQL expression' })).toBeInTheDocument();
    expect(screen.queryByText('Depth')).not.toBeInTheDocument();
  });

  it('starts in the datasource default query type', async () => {
    setup({ refId: 'A' }, { defaultQueryType: 'redTable' });
    expect(screen.getByText('Span kinds')).toBeInTheDocument();
  });

  it('switches to the service graph editor with its defaults and loads services', async () => {
    const { onChange, onRunQuery } = setup({ refId: 'A', expr: 'up' });
    fireEvent.click(screen.getByLabelText('Service graph'));

    expect(onChange).toHaveBeenLastCalledWith({
      refId: 'A',
      expr: 'up',
      queryType: 'serviceGraph',
      depth: 2,
      connectionTypes: [],
      filters: '',
      maxNodes: 1500,
    });
    expect(onRunQuery).toHaveBeenCalled();
    expect(screen.queryByRole('textbox', { name: 'PromQL expression' })).not.toBeInTheDocument();
    expect(screen.getByRole('spinbutton', { name: 'Depth' })).toHaveValue(2);
    // No connection type selected means all of them, and says so.
    expect(screen.getByText('All types')).toBeInTheDocument();

    fireEvent.keyDown(await screen.findByRole('combobox', { name: 'Service' }), { key: 'ArrowDown' });
    for (const service of ['checkout', 'frontend', 'payments']) {
      expect(await screen.findByText(service)).toBeInTheDocument();
    }
    fireEvent.click(screen.getByText('payments'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ service: 'payments' }));
  });

  it('offers an alert rule only what it can evaluate', () => {
    setup({ refId: 'A', expr: 'up' }, {}, CoreApp.UnifiedAlerting);
    expect(screen.getByLabelText('Range')).toBeInTheDocument();
    expect(screen.getByLabelText('Instant')).toBeInTheDocument();
    for (const gone of ['Both', 'Table', 'Heatmap', 'Exemplars']) {
      expect(screen.queryByLabelText(gone)).not.toBeInTheDocument();
    }
  });

  it('has every option in a dashboard and no Live switch in Explore', () => {
    setup({ refId: 'A', expr: 'up' }, {}, CoreApp.Dashboard);
    for (const option of ['Both', 'Table', 'Heatmap', 'Exemplars']) {
      expect(screen.getByLabelText(option)).toBeInTheDocument();
    }
    cleanup();
    setup({ refId: 'A', queryType: 'serviceGraph' }, {}, CoreApp.Explore);
    expect(screen.getByText('Depth')).toBeInTheDocument();
    expect(screen.queryByLabelText('Live')).not.toBeInTheDocument();
    cleanup();
    setup({ refId: 'A', queryType: 'redTable' }, {}, CoreApp.Dashboard);
    expect(screen.getByLabelText('Live')).toBeInTheDocument();
  });

  it('edits RED table fields', () => {
    const { onChange, onRunQuery } = setup({ refId: 'A', queryType: 'redTable' });
    fireEvent.click(screen.getByLabelText('Span name'));
    expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType: 'redTable', groupBy: 'span_name' });
    expect(onRunQuery).toHaveBeenCalledTimes(1);

    fireEvent.change(screen.getByRole('spinbutton', { name: 'Top N' }), { target: { value: '5' } });
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ topN: 5 }));
    fireEvent.blur(screen.getByRole('spinbutton', { name: 'Top N' }));
    expect(onRunQuery).toHaveBeenCalledTimes(2);
  });

  it('completes metric names with the PromQL grammar', async () => {
    const { onChange, onRunQuery } = setup({ refId: 'A' });
    const content = screen.getByRole('textbox', { name: 'PromQL expression' });
    const view = EditorView.findFromDOM(screen.getByTestId('promql-field'))!;

    act(() => {
      view.focus();
      view.dispatch({
        changes: { from: 0, insert: 'rate(traces_' },
        selection: { anchor: 12 },
        userEvent: 'input.type',
      });
      startCompletion(view);
    });
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ expr: 'rate(traces_' }));
    const listbox = await screen.findByRole('listbox', {}, { timeout: 3000 });
    const options = within(listbox)
      .getAllByRole('option')
      .map((o) => o.textContent);
    expect(options).toEqual(
      expect.arrayContaining([
        expect.stringContaining('traces_spanmetrics_calls_total'),
        expect.stringContaining('traces_service_graph_request_total'),
      ])
    );
    expect(options.some((o) => o?.startsWith('up'))).toBe(false);

    // Shift+Enter runs the query.
    expect(onRunQuery).not.toHaveBeenCalled();
    fireEvent.keyDown(content, { key: 'Enter', shiftKey: true });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
  });

  it('completes our real label names inside a selector', async () => {
    const datasource = new DataSource({ uid: 'sg', jsonData: {} } as DataSourceInstanceSettings<SpangraphOptions>);
    const getResource = jest.spyOn(datasource, 'getResource').mockResolvedValue({
      status: 'success',
      data: ['__name__', 'service', 'span_name'],
    });
    const client = new DatasourcePromClient(datasource);
    expect(await client.labelNames('traces_spanmetrics_calls_total')).toEqual(['__name__', 'service', 'span_name']);
    expect(getResource).toHaveBeenLastCalledWith('api/v1/labels', {
      'match[]': '{__name__="traces_spanmetrics_calls_total"}',
    });
  });

  it('maps the PromQL type and format controls onto the Prometheus fields', async () => {
    const { onChange } = setup({ refId: 'A', expr: 'up' });
    fireEvent.click(screen.getByLabelText('Both'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ range: true, instant: true }));
    fireEvent.click(screen.getByLabelText('Table'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ format: 'table' }));
    await act(async () => fireEvent.click(screen.getByRole('switch', { name: 'Exemplars' })));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ exemplar: true }));
  });

  it.each([['serviceGraph' as const], ['redTable' as const]])(
    'turns on live refresh in the %s editor',
    async (queryType) => {
      const { onChange, onRunQuery } = setup({ refId: 'A', queryType });
      const toggle = await screen.findByRole('switch', { name: 'Live' });
      expect(toggle).not.toBeChecked();
      await act(async () => fireEvent.click(toggle));
      expect(onChange).toHaveBeenLastCalledWith({ refId: 'A', queryType, live: true });
      expect(onRunQuery).toHaveBeenCalledTimes(1);
      expect(screen.getByRole('switch', { name: 'Live' })).toBeChecked();
    }
  );
});
