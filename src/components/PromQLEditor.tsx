import { CoreApp } from '@grafana/data';
import { InlineField, InlineFieldRow, InlineSwitch, Input, RadioButtonGroup } from '@grafana/ui';
import React from 'react';

import { SpangraphQuery } from '../types';
import { SubEditorProps } from './editorProps';
import { PromQLField } from './PromQLField';

type QueryKind = 'range' | 'instant' | 'both';

const KIND_OPTIONS: Array<{ value: QueryKind; label: string }> = [
  { value: 'range', label: 'Range' },
  { value: 'instant', label: 'Instant' },
  { value: 'both', label: 'Both' },
];

const FORMAT_OPTIONS: Array<{ value: NonNullable<SpangraphQuery['format']>; label: string }> = [
  { value: 'time_series', label: 'Time series' },
  { value: 'table', label: 'Table' },
  { value: 'heatmap', label: 'Heatmap' },
];

/** Grafana's alert rule editors: an alert rule reads series or numbers, one query kind at a time. */
const ALERTING_APPS: string[] = [CoreApp.UnifiedAlerting, CoreApp.CloudAlerting];

export function PromQLEditor({ datasource, query, onChange, onRunQuery, app }: SubEditorProps) {
  const alerting = ALERTING_APPS.includes(app ?? '');
  const kind: QueryKind = query.range && query.instant ? 'both' : query.instant ? 'instant' : 'range';

  return (
    <>
      <PromQLField
        source={datasource}
        value={query.expr ?? ''}
        placeholder="PromQL, e.g. sum by (service) (rate(traces_spanmetrics_calls_total[$__rate_interval])) — Shift+Enter runs, Ctrl+Space suggests"
        onChange={(expr) => onChange({ ...query, expr })}
        onRunQuery={onRunQuery}
      />
      <InlineFieldRow>
        <InlineField
          label="Legend"
          tooltip="Series name override, e.g. {{service}}; dashboard variables are replaced"
          labelWidth={10}
        >
          <Input
            aria-label="Legend format"
            width={24}
            placeholder="auto"
            value={query.legendFormat ?? ''}
            onChange={(e) => onChange({ ...query, legendFormat: e.currentTarget.value })}
            onBlur={onRunQuery}
          />
        </InlineField>
        <InlineField label="Type">
          <RadioButtonGroup
            options={alerting ? KIND_OPTIONS.filter((o) => o.value !== 'both') : KIND_OPTIONS}
            value={kind}
            onChange={(k) => {
              onChange({ ...query, range: k !== 'instant', instant: k !== 'range' });
              onRunQuery();
            }}
          />
        </InlineField>
        {/* Table and heatmap shape a panel's view; an alert rule reads the series themselves. */}
        {!alerting && (
          <InlineField label="Format">
            <RadioButtonGroup
              options={FORMAT_OPTIONS}
              value={query.format ?? 'time_series'}
              onChange={(format) => {
                onChange({ ...query, format });
                onRunQuery();
              }}
            />
          </InlineField>
        )}
        <InlineField
          label="Min step"
          tooltip="Lower bound for the step, e.g. 30s or $min_step; empty: the panel interval. Never below the collection interval"
        >
          <Input
            aria-label="Min step"
            width={10}
            placeholder="auto"
            value={query.interval ?? ''}
            onChange={(e) => onChange({ ...query, interval: e.currentTarget.value })}
            onBlur={onRunQuery}
          />
        </InlineField>
        {/* Exemplars are never evaluated for alert rules. */}
        {!alerting && (
          <InlineField label="Exemplars">
            <InlineSwitch
              aria-label="Exemplars"
              value={!!query.exemplar}
              onChange={(e) => {
                onChange({ ...query, exemplar: e.currentTarget.checked });
                onRunQuery();
              }}
            />
          </InlineField>
        )}
      </InlineFieldRow>
    </>
  );
}
