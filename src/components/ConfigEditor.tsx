import { DataSourcePluginOptionsEditorProps } from '@grafana/data';
import { DataSourcePicker } from '@grafana/runtime';
import { Field, Input, RadioButtonGroup, Stack, Text } from '@grafana/ui';
import React from 'react';

import { QUERY_TYPES, SpangraphOptions } from '../types';

type Props = DataSourcePluginOptionsEditorProps<SpangraphOptions>;

export function ConfigEditor({ options, onOptionsChange }: Props) {
  const { jsonData } = options;
  const update = (patch: Partial<SpangraphOptions>) =>
    onOptionsChange({ ...options, jsonData: { ...jsonData, ...patch } });

  return (
    <Stack direction="column" gap={2}>
      <Text color="secondary" element="p">
        Spangraph serves RED metrics and a service graph computed from OpenTelemetry traces. Save &amp; test checks that
        the backend is reachable and has span metrics for the tenant below.
      </Text>
      <Field label="Tenant" description="Tenant whose metrics this data source reads; leave empty when there is one.">
        <Input
          id="spangraph-tenant"
          width={40}
          placeholder="single-tenant"
          value={jsonData.tenant ?? ''}
          onChange={(e) => update({ tenant: e.currentTarget.value })}
        />
      </Field>
      <Field
        label="Traces data source"
        htmlFor="spangraph-traces-datasource"
        description="Tempo data source that the View traces links on service graph nodes, edges and RED rows open: the links search with TraceQL, which only Tempo runs."
      >
        <DataSourcePicker
          inputId="spangraph-traces-datasource"
          type="tempo"
          noDefault
          width={40}
          current={jsonData.tracesDatasourceUid ?? null}
          onChange={(ds) => update({ tracesDatasourceUid: ds.uid })}
          onClear={() => update({ tracesDatasourceUid: undefined })}
        />
      </Field>
      <Field
        label="Min interval"
        description="Least step of PromQL queries without a min step of their own, e.g. 30s; empty: the collection interval. The backend never steps below the collection interval."
      >
        <Input
          id="spangraph-time-interval"
          width={20}
          placeholder="collection interval"
          value={jsonData.timeInterval ?? ''}
          onChange={(e) => update({ timeInterval: e.currentTarget.value || undefined })}
        />
      </Field>
      <Field label="Default query type" description="Query type that new queries in this data source start with.">
        <RadioButtonGroup
          options={QUERY_TYPES}
          value={jsonData.defaultQueryType ?? 'promql'}
          onChange={(defaultQueryType) => update({ defaultQueryType })}
        />
      </Field>
    </Stack>
  );
}
