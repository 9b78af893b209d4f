import { QueryEditorProps } from '@grafana/data';

import type { DataSource } from '../datasource';
import { SpangraphOptions, SpangraphQuery } from '../types';

/** What each query-type sub-editor receives from QueryEditor. */
export type SubEditorProps = Pick<
  QueryEditorProps<DataSource, SpangraphQuery, SpangraphOptions>,
  'datasource' | 'query' | 'onChange' | 'onRunQuery' | 'app'
>;

/** Parses a number input; an empty or invalid entry clears the field so the default applies. */
export function parseIntOrUndefined(value: string): number | undefined {
  const n = parseInt(value, 10);
  return Number.isFinite(n) ? n : undefined;
}
