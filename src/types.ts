import { DataSourceJsonData } from '@grafana/data';
import { DataQuery } from '@grafana/schema';

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

/** Fields a fresh query of each type starts with; existing values always win over these. */
export const QUERY_DEFAULTS: Record<QueryType, Partial<SpangraphQuery>> = {
  promql: { expr: '', range: true, instant: false, format: 'time_series', exemplar: false },
  serviceGraph: { depth: 2, connectionTypes: CONNECTION_TYPES.map((c) => c.value), filters: '', maxNodes: 200 },
  redTable: { groupBy: 'service', spanKinds: ['SPAN_KIND_SERVER'], topN: 20 },
};

export function resolveQueryType(query: Partial<SpangraphQuery>, fallback: QueryType = 'promql'): QueryType {
  if (query.queryType) {
    return query.queryType;
  }
  return query.expr ? 'promql' : fallback;
}
