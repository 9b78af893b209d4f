import { DataSourceInstanceSettings } from '@grafana/data';
import { act, fireEvent, render, screen, within } from '@testing-library/react';
import React, { useState } from 'react';

import { DataSource } from '../datasource';
import { SpangraphOptions, SpangraphQuery } from '../types';
import { QueryEditor } from './QueryEditor';

const RESOURCES: Record<string, string[]> = {
  'api/v1/label/__name__/values': ['traces_spanmetrics_calls_total', 'traces_service_graph_request_total', 'up'],
  'api/v1/label/client/values': ['frontend', 'checkout'],
  'api/v1/label/server/values': ['checkout', 'payments'],
};

function setup(initial: SpangraphQuery, jsonData: SpangraphOptions = {}) {
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
      connectionTypes: ['', 'database', 'messaging_system', 'virtual_node'],
      filters: '',
      maxNodes: 200,
    });
    expect(onRunQuery).toHaveBeenCalled();
    expect(screen.queryByRole('textbox', { name: 'PromQL expression' })).not.toBeInTheDocument();
    expect(screen.getByRole('spinbutton', { name: 'Depth' })).toHaveValue(2);
    expect(screen.getByText('RPC')).toBeInTheDocument();

    fireEvent.keyDown(await screen.findByRole('combobox', { name: 'Service' }), { key: 'ArrowDown' });
    for (const service of ['checkout', 'frontend', 'payments']) {
      expect(await screen.findByText(service)).toBeInTheDocument();
    }
    fireEvent.click(screen.getByText('payments'));
    expect(onChange).toHaveBeenLastCalledWith(expect.objectContaining({ service: 'payments' }));
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

  it('completes metric names in the PromQL editor', async () => {
    const { onChange, onRunQuery } = setup({ refId: 'A' });
    const editor = screen.getByRole('textbox', { name: 'PromQL expression' });

    editor.focus();
    fireEvent.change(editor, { target: { value: 'rate(traces_' } });
    const menu = await screen.findByRole('menu', { name: 'PromQL suggestions' });
    // Typing must be able to go on while suggestions are shown.
    expect(editor).toHaveFocus();
    expect(
      within(menu)
        .getAllByRole('menuitem')
        .map((item) => item.textContent)
    ).toEqual(['traces_spanmetrics_calls_total', 'traces_service_graph_request_total']);

    fireEvent.keyDown(editor, { key: 'ArrowDown' });
    fireEvent.keyDown(editor, { key: 'Enter' });
    expect(onChange).toHaveBeenLastCalledWith(
      expect.objectContaining({ expr: 'rate(traces_service_graph_request_total' })
    );
    expect(screen.queryByRole('menu')).not.toBeInTheDocument();
    expect(onRunQuery).not.toHaveBeenCalled();

    fireEvent.keyDown(editor, { key: 'Enter', shiftKey: true });
    expect(onRunQuery).toHaveBeenCalledTimes(1);
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
