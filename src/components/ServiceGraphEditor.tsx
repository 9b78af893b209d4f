import { SelectableValue } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, MultiSelect, Select } from '@grafana/ui';
import React from 'react';

import { CONNECTION_TYPES, QUERY_DEFAULTS } from '../types';
import { parseIntOrUndefined, SubEditorProps } from './editorProps';
import { useServices } from './hooks';
import { LiveField } from './LiveField';

export function ServiceGraphEditor({ datasource, query, onChange, onRunQuery, app }: SubEditorProps) {
  const { services, loading, error } = useServices(datasource);

  // Keep a typed-in or templated service (e.g. $service) selectable even though no series names it.
  const serviceOptions = [...new Set([...services, ...(query.service ? [query.service] : [])])].map((s) => ({
    label: s,
    value: s,
  }));

  return (
    <InlineFieldRow>
      <InlineField label="Service" labelWidth={10} invalid={!!error} error={error}>
        {/* Select rather than Combobox: Combobox is missing from Grafana 11.0, which plugin.json supports. */}
        {/* eslint-disable-next-line @typescript-eslint/no-deprecated */}
        <Select
          aria-label="Service"
          width={30}
          isLoading={loading}
          isClearable
          allowCustomValue
          placeholder="All services"
          options={serviceOptions}
          value={query.service ?? null}
          onChange={(v: SelectableValue<string> | null) => {
            onChange({ ...query, service: v?.value });
            onRunQuery();
          }}
        />
      </InlineField>
      <InlineField label="Depth" tooltip="Hops to follow from the service in each direction">
        <Input
          aria-label="Depth"
          type="number"
          min={1}
          width={8}
          placeholder={String(QUERY_DEFAULTS.serviceGraph.depth)}
          value={query.depth ?? ''}
          onChange={(e) => onChange({ ...query, depth: parseIntOrUndefined(e.currentTarget.value) })}
          onBlur={onRunQuery}
        />
      </InlineField>
      <InlineField label="Connections" tooltip="Connection types to show; none selected shows them all">
        {/* eslint-disable-next-line @typescript-eslint/no-deprecated -- as for Select above */}
        <MultiSelect
          aria-label="Connection types"
          width={40}
          placeholder="All types"
          options={CONNECTION_TYPES}
          value={query.connectionTypes ?? []}
          onChange={(values: Array<SelectableValue<string>>) => {
            onChange({ ...query, connectionTypes: values.map((v) => v.value ?? '') });
            onRunQuery();
          }}
        />
      </InlineField>
      <InlineField label="Label filters" tooltip='Extra PromQL matchers, e.g. deployment_environment="prod"'>
        <Input
          aria-label="Label filters"
          width={36}
          placeholder='deployment_environment="prod"'
          value={query.filters ?? ''}
          onChange={(e) => onChange({ ...query, filters: e.currentTarget.value })}
          onBlur={onRunQuery}
        />
      </InlineField>
      <InlineField label="Max nodes">
        <Input
          aria-label="Max nodes"
          type="number"
          min={1}
          width={10}
          placeholder={String(QUERY_DEFAULTS.serviceGraph.maxNodes)}
          value={query.maxNodes ?? ''}
          onChange={(e) => onChange({ ...query, maxNodes: parseIntOrUndefined(e.currentTarget.value) })}
          onBlur={onRunQuery}
        />
      </InlineField>
      <LiveField query={query} onChange={onChange} onRunQuery={onRunQuery} app={app} />
    </InlineFieldRow>
  );
}
