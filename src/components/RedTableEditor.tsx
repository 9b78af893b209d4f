import { SelectableValue } from '@grafana/data';
import { InlineField, InlineFieldRow, Input, MultiSelect, RadioButtonGroup } from '@grafana/ui';
import React from 'react';

import { QUERY_DEFAULTS, SPAN_KINDS, SpangraphQuery } from '../types';
import { parseIntOrUndefined, SubEditorProps } from './editorProps';
import { LiveField } from './LiveField';

const GROUP_BY_OPTIONS: Array<{ value: NonNullable<SpangraphQuery['groupBy']>; label: string }> = [
  { value: 'service', label: 'Service' },
  { value: 'span_name', label: 'Span name' },
];

// SPAN_KIND_SERVER -> Server
const SPAN_KIND_OPTIONS = SPAN_KINDS.map((kind) => ({
  value: kind,
  label: kind.charAt(10) + kind.slice(11).toLowerCase(),
}));

export function RedTableEditor({ query, onChange, onRunQuery, app }: SubEditorProps) {
  return (
    <InlineFieldRow>
      <InlineField label="Group by" labelWidth={10}>
        <RadioButtonGroup
          options={GROUP_BY_OPTIONS}
          value={query.groupBy ?? 'service'}
          onChange={(groupBy) => {
            onChange({ ...query, groupBy });
            onRunQuery();
          }}
        />
      </InlineField>
      <InlineField label="Span kinds">
        {/* MultiSelect rather than MultiCombobox: the latter is missing from Grafana 11, which plugin.json supports. */}
        {/* eslint-disable-next-line @typescript-eslint/no-deprecated */}
        <MultiSelect
          aria-label="Span kinds"
          width={40}
          options={SPAN_KIND_OPTIONS}
          value={query.spanKinds ?? []}
          onChange={(values: Array<SelectableValue<string>>) => {
            onChange({ ...query, spanKinds: values.flatMap((v) => (v.value ? [v.value] : [])) });
            onRunQuery();
          }}
        />
      </InlineField>
      <InlineField label="Top N" tooltip="Rows to keep, busiest first">
        <Input
          aria-label="Top N"
          type="number"
          min={1}
          width={10}
          placeholder={QUERY_DEFAULTS.redTable.topN ? String(QUERY_DEFAULTS.redTable.topN) : 'all'}
          value={query.topN ?? ''}
          onChange={(e) => onChange({ ...query, topN: parseIntOrUndefined(e.currentTarget.value) })}
          onBlur={onRunQuery}
        />
      </InlineField>
      <LiveField query={query} onChange={onChange} onRunQuery={onRunQuery} app={app} />
    </InlineFieldRow>
  );
}
