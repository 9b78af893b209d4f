import {
  AdHocVariableFilter,
  CoreApp,
  DataFrame,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceGetTagKeysOptions,
  DataSourceGetTagValuesOptions,
  DataSourceInstanceSettings,
  LegacyMetricFindQueryOptions,
  LiveChannelScope,
  MetricFindValue,
  ScopedVars,
  StreamingFrameAction,
  TimeRange,
} from '@grafana/data';
import { config, DataSourceWithBackend, getGrafanaLiveSrv, getTemplateSrv } from '@grafana/runtime';
import { defer, map, merge, Observable, of } from 'rxjs';

import { adHocFiltersToMatchers, formatPromQLVariable, injectLabelMatchers } from './promql';
import { MetadataSource } from './promqlClient';
import { transformPromQLResponse } from './resultTransformer';
import { QUERY_DEFAULTS, QueryType, resolveQueryType, SpangraphOptions, SpangraphQuery } from './types';

/** The span-metrics connector's service graph series; its client/server labels name the services. */
const SERVICE_GRAPH_METRIC = 'traces_service_graph_request_total';

interface PromResponse<T> {
  status: 'success' | 'error';
  data: T;
  error?: string;
}

interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

type Params = Record<string, string | number>;

/**
 * Rows a live frame may hold: more than any one frame has (Grafana's default of 1000 could cut a big service
 * graph's edges short), yet a bound on what Grafana's live worker keeps of past refreshes.
 */
const LIVE_MAX_ROWS = 10_000;

export class DataSource extends DataSourceWithBackend<SpangraphQuery, SpangraphOptions> implements MetadataSource {
  readonly defaultQueryType: QueryType;

  constructor(instanceSettings: DataSourceInstanceSettings<SpangraphOptions>) {
    super(instanceSettings);
    this.defaultQueryType = instanceSettings.jsonData.defaultQueryType ?? 'promql';
  }

  getDefaultQuery(_app: CoreApp): Partial<SpangraphQuery> {
    return { queryType: this.defaultQueryType, ...QUERY_DEFAULTS[this.defaultQueryType] };
  }

  filterQuery(query: SpangraphQuery): boolean {
    if (query.hide) {
      return false;
    }
    // An empty PromQL editor would only produce a backend parse error.
    return resolveQueryType(query, this.defaultQueryType) !== 'promql' || !!query.expr?.trim();
  }

  /**
   * Live service graph and RED queries follow the backend's Grafana Live stream (see pkg/plugin/stream.go);
   * everything else is a normal backend query.
   */
  query(request: DataQueryRequest<SpangraphQuery>): Observable<DataQueryResponse> {
    const isLive = (q: SpangraphQuery) => !!q.live && resolveQueryType(q, this.defaultQueryType) !== 'promql';
    // Public dashboards have no Grafana Live connection, so their live queries run once like the rest.
    if (config.publicDashboardAccessToken || !request.targets.some(isLive)) {
      return this.backendQuery(request);
    }
    const streams = request.targets
      .filter((q) => isLive(q) && this.filterQuery(q))
      .map((q) => this.liveQuery(this.applyTemplateVariables(q, request.scopedVars, request.filters), request.range));
    const rest = request.targets.filter((q) => !isLive(q));
    if (rest.length) {
      streams.push(this.backendQuery({ ...request, targets: rest }));
    }
    return streams.length ? merge(...streams) : of({ data: [] });
  }

  /** A one-off backend query, its PromQL results shaped as the Prometheus datasource shapes them. */
  private backendQuery(request: DataQueryRequest<SpangraphQuery>): Observable<DataQueryResponse> {
    return super.query(request).pipe(map((response) => transformPromQLResponse(response, request)));
  }

  private liveQuery(query: SpangraphQuery, range: TimeRange): Observable<DataQueryResponse> {
    // Each refresh looks back as far as the panel's time range does, but at least a minute.
    const lookback = `${Math.max(60, Math.round((range.to.valueOf() - range.from.valueOf()) / 1000))}s`;
    const { refId, ...rest } = query;
    // Grafana keys a channel by its path alone and keeps the first subscriber's data, so the path hashes all of
    // the data, window included. refId is left out so that panels with the same query share one stream.
    const path = `${query.queryType}/${fnv1a(canonicalJSON({ ...rest, window: lookback }))}`;
    // defer: subscribe to the channel only once Grafana subscribes to the panel's data, and give each
    // subscriber its own record of the latest frames.
    return defer(() => {
      // The stream carries one frame at a time (a service graph's nodes, then its edges), so keep the latest
      // frame of each name: a node graph needs both.
      const latest = new Map<string, DataFrame>();
      return getGrafanaLiveSrv()
        .getDataStream({
          addr: {
            scope: LiveChannelScope.DataSource,
            stream: this.uid,
            // The older name of `stream`, for Grafana versions that predate it.
            // eslint-disable-next-line @typescript-eslint/no-deprecated
            namespace: this.uid,
            path,
            data: { ...query, window: lookback },
          },
          // Each refresh sends whole frames: replace, don't append (a RED table's rows would pile up otherwise).
          buffer: { action: StreamingFrameAction.Replace, maxLength: LIVE_MAX_ROWS },
        })
        .pipe(
          map((response) => {
            for (const frame of response.data as DataFrame[]) {
              // Skip the empty placeholder Grafana emits until a first frame has arrived.
              if (frame.fields.length) {
                latest.set(frame.name ?? '', { ...frame, refId });
              }
            }
            return { ...response, data: [...latest.values()] };
          })
        );
    });
  }

  applyTemplateVariables(
    query: SpangraphQuery,
    scopedVars: ScopedVars,
    filters?: AdHocVariableFilter[]
  ): SpangraphQuery {
    const templateSrv = getTemplateSrv();
    const adHoc = adHocFiltersToMatchers(filters);
    // As in the Prometheus datasource, $__interval and $__interval_ms are left to the backend, which substitutes the
    // step it really uses (never below the collection interval); Grafana's own figure may be smaller.
    const { __interval: _interval, __interval_ms: _intervalMs, ...vars } = scopedVars;
    const expr = query.expr && templateSrv.replace(query.expr, vars, formatPromQLVariable);
    const userFilters = query.filters ? templateSrv.replace(query.filters, scopedVars) : '';
    return {
      ...query,
      queryType: resolveQueryType(query, this.defaultQueryType),
      expr: expr && injectLabelMatchers(expr, adHoc),
      legendFormat: query.legendFormat && templateSrv.replace(query.legendFormat, vars),
      interval: query.interval && templateSrv.replace(query.interval, vars),
      service: query.service && templateSrv.replace(query.service, scopedVars),
      // The backend adds `filters` to the selectors it builds for service graph and RED queries.
      filters: [userFilters, adHoc].filter(Boolean).join(','),
    };
  }

  getQueryDisplayText(query: SpangraphQuery): string {
    switch (resolveQueryType(query, this.defaultQueryType)) {
      case 'serviceGraph':
        return `Service graph: ${query.service || 'all services'}, depth ${query.depth ?? QUERY_DEFAULTS.serviceGraph.depth}`;
      case 'redTable':
        return `RED table by ${query.groupBy ?? 'service'}: ${(query.spanKinds ?? []).join(', ')}`;
      default:
        return query.expr ?? '';
    }
  }

  /**
   * Dashboard variable queries, with the Prometheus datasource's syntax:
   * label_names(), label_values(label), label_values(metric, label), metrics(regex), query_result(expr);
   * anything else is taken as a series selector.
   */
  async metricFindQuery(query: string, options?: LegacyMetricFindQueryOptions): Promise<MetricFindValue[]> {
    const q = getTemplateSrv().replace(query, options?.scopedVars, formatPromQLVariable).trim();
    const range = options?.range;
    const toValues = (names: string[]) => names.map((text) => ({ text }));

    let m: RegExpMatchArray | null;
    if ((m = q.match(/^label_names\(\s*(.*?)\s*\)$/))) {
      return toValues(await this.labelNames(m[1] || undefined, range));
    }
    if ((m = q.match(/^label_values\((?:(.+),\s*)?([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$/))) {
      return toValues(await this.labelValues(m[2], m[1]?.trim(), range));
    }
    if ((m = q.match(/^metrics\((.*)\)$/))) {
      const re = new RegExp(m[1].trim());
      return toValues((await this.labelValues('__name__', undefined, range)).filter((name) => re.test(name)));
    }
    if ((m = q.match(/^query_result\((.+)\)$/))) {
      return this.queryResult(m[1], range);
    }
    return (await this.series(q, range)).map((labels) => ({ text: seriesText(labels) }));
  }

  async getTagKeys(options?: DataSourceGetTagKeysOptions<SpangraphQuery>): Promise<MetricFindValue[]> {
    const names = await this.labelNames(filtersSelector(options?.filters), options?.timeRange);
    return names.filter((n) => n !== '__name__').map((text) => ({ text }));
  }

  async getTagValues(options: DataSourceGetTagValuesOptions<SpangraphQuery>): Promise<MetricFindValue[]> {
    const values = await this.labelValues(options.key, filtersSelector(options.filters), options.timeRange);
    return values.map((text) => ({ text }));
  }

  metricNames(): Promise<string[]> {
    return this.labelValues('__name__');
  }

  series(match: string, range?: TimeRange): Promise<Array<Record<string, string>>> {
    return this.promApi('api/v1/series', { 'match[]': match, ...timeParams(range) });
  }

  labelNames(match?: string, range?: TimeRange): Promise<string[]> {
    return this.promApi<string[]>('api/v1/labels', { ...matchParam(match), ...timeParams(range) });
  }

  labelValues(label: string, match?: string, range?: TimeRange): Promise<string[]> {
    return this.promApi<string[]>(`api/v1/label/${encodeURIComponent(label)}/values`, {
      ...matchParam(match),
      ...timeParams(range),
    });
  }

  /** Every service that appears on either side of a service graph edge. */
  async serviceNames(): Promise<string[]> {
    const [clients, servers] = await Promise.all([
      this.labelValues('client', SERVICE_GRAPH_METRIC),
      this.labelValues('server', SERVICE_GRAPH_METRIC),
    ]);
    return [...new Set([...clients, ...servers])].sort();
  }

  private async queryResult(expr: string, range?: TimeRange): Promise<MetricFindValue[]> {
    const params: Params = { query: expr };
    if (range) {
      params.time = Math.floor(range.to.valueOf() / 1000);
    }
    const data = await this.promApi<{ resultType: string; result: PromSample[] | [number, string] }>(
      'api/v1/query',
      params
    );
    if (data.resultType === 'scalar' || data.resultType === 'string') {
      return [{ text: String((data.result as [number, string])[1]) }];
    }
    if (data.resultType !== 'vector') {
      throw new Error(`query_result() needs an instant vector, got ${data.resultType}`);
    }
    // Same text as the Prometheus datasource, so regexes written for it keep working.
    return (data.result as PromSample[]).map((s) => ({
      text: `${seriesText(s.metric)} ${s.value[1]} ${s.value[0] * 1000}`,
    }));
  }

  private async promApi<T>(path: string, params: Params): Promise<T> {
    const res = await this.getResource<PromResponse<T>>(path, params);
    if (res?.status !== 'success') {
      throw new Error(res?.error || `unexpected response from ${path}`);
    }
    return res.data;
  }
}

/** FNV-1a (32 bits) in hex: a short stream name that is the same on every page load and browser. */
export function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  }
  return (hash >>> 0).toString(16).padStart(8, '0');
}

/** JSON with object keys sorted, so that equal queries hash alike whatever order their fields were set in. */
function canonicalJSON(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v
  );
}

function matchParam(match?: string): Params {
  return match ? { 'match[]': match } : {};
}

function timeParams(range?: TimeRange): Params {
  return range ? { start: Math.floor(range.from.valueOf() / 1000), end: Math.ceil(range.to.valueOf() / 1000) } : {};
}

/** A series selector from the other ad-hoc filters, so tag suggestions narrow as filters are added. */
function filtersSelector(filters?: AdHocVariableFilter[]): string | undefined {
  const matchers = adHocFiltersToMatchers(filters);
  return matchers ? `{${matchers}}` : undefined;
}

function seriesText(labels: Record<string, string>): string {
  const { __name__: name = '', ...rest } = labels;
  const pairs = Object.entries(rest).map(([k, v]) => `${k}="${v}"`);
  return `${name}{${pairs.join(', ')}}`;
}
