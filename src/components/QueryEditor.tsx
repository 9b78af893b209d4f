import { QueryEditorProps } from '@grafana/data';
import { RadioButtonGroup, Stack } from '@grafana/ui';
import React from 'react';

import { DataSource } from '../datasource';
import { QUERY_DEFAULTS, QUERY_TYPES, QueryType, resolveQueryType, SpangraphOptions, SpangraphQuery } from '../types';
import { PromQLEditor } from './PromQLEditor';
import { RedTableEditor } from './RedTableEditor';
import { ServiceGraphEditor } from './ServiceGraphEditor';

type Props = QueryEditorProps<DataSource, SpangraphQuery, SpangraphOptions>;

const SUB_EDITORS = {
  promql: PromQLEditor,
  serviceGraph: ServiceGraphEditor,
  redTable: RedTableEditor,
};

export function QueryEditor({ datasource, query, onChange, onRunQuery, app }: Props) {
  const queryType = resolveQueryType(query, datasource.defaultQueryType);
  const SubEditor = SUB_EDITORS[queryType];

  const onQueryTypeChange = (next: QueryType) => {
    // Fields of the other types stay, so switching back and forth loses nothing.
    onChange({ ...QUERY_DEFAULTS[next], ...query, queryType: next });
    onRunQuery();
  };

  return (
    <Stack direction="column" gap={1}>
      <RadioButtonGroup aria-label="Query type" options={QUERY_TYPES} value={queryType} onChange={onQueryTypeChange} />
      <SubEditor datasource={datasource} query={query} onChange={onChange} onRunQuery={onRunQuery} app={app} />
    </Stack>
  );
}
