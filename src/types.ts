import { DataSourceJsonData } from '@grafana/data';
import { DataQuery } from '@grafana/schema';

import backendDefaults from './queryDefaults.json';

export type QueryType = 'promql' | 'serviceGraph' | 'redTable';

export interface SpangraphQuery extends DataQuery {
  /** Defaults to 'promql' when `expr` is set, otherwise to the datasource's default query type. */
  queryType?: QueryType;

  // promql: field names match the Prometheus datasource so queries can be copied between the two.
  expr?: string;
  legendFormat?: string;
  instant?: boolean;
  range?: boolean;
  format?: 'time_series' | 'table' | 'heatmap';
  interval?: string;
  exemplar?: boolean;

  // serviceGraph
  service?: string;
  depth?: number;
  /** '' is a plain RPC edge; the others are the `connection_type` values of the service graph connector. */
  connectionTypes?: string[];
  /** Extra PromQL label matchers, e.g. `deployment_environment="prod"`. */
  filters?: string;
  maxNodes?: number;

  // serviceGraph and redTable
  /**
   * Follow the backend's Grafana Live stream (fresh frames after every collection) instead of querying once.
   * Defaults to false.
   */
  live?: boolean;

  // redTable
  groupBy?: 'service' | 'span_name';
  spanKinds?: string[];
  topN?: number;
}

export interface SpangraphOptions extends DataSourceJsonData {
  /** The datasource's min interval, as for Prometheus; Grafana shows it in the query options (plugin.json queryOptions). */
  timeInterval?: string;
  tenant?: string;
  tracesDatasourceUid?: string;
  defaultQueryType?: QueryType;
}

export const QUERY_TYPES: Array<{ value: QueryType; label: string }> = [
  { value: 'promql', label: 'PromQL' },
  { value: 'serviceGraph', label: 'Service graph' },
  { value: 'redTable', label: 'RED table' },
];

export const CONNECTION_TYPES: Array<{ value: string; label: string }> = [
  { value: '', label: 'RPC' },
  { value: 'database', label: 'Database' },
  { value: 'messaging_system', label: 'Messaging system' },
  { value: 'virtual_node', label: 'Virtual node' },
];

export const SPAN_KINDS = [
  'SPAN_KIND_SERVER',
  'SPAN_KIND_CLIENT',
  'SPAN_KIND_PRODUCER',
  'SPAN_KIND_CONSUMER',
  'SPAN_KIND_INTERNAL',
];

/**
 * Fields a fresh query of each type starts with; existing values always win over these. The service graph and RED
 * table figures are the backend's own defaults (queryDefaults.json is written by pkg/plugin's TestQueryDefaultsJSON),
 * so a query that leaves a field out gets what the editor shows. No connection type means every type.
 */
export const QUERY_DEFAULTS: Record<QueryType, Partial<SpangraphQuery>> = {
  promql: { expr: '', range: true, instant: false, format: 'time_series', exemplar: false },
  serviceGraph: { ...backendDefaults.serviceGraph, connectionTypes: [], filters: '' },
  redTable: {
    groupBy: backendDefaults.redTable.groupBy as SpangraphQuery['groupBy'],
    spanKinds: backendDefaults.redTable.spanKinds,
    topN: backendDefaults.redTable.topN || undefined,
  },
};

export function resolveQueryType(query: Partial<SpangraphQuery>, fallback: QueryType = 'promql'): QueryType {
  if (query.queryType) {
    return query.queryType;
  }
  return query.expr ? 'promql' : fallback;
}
