import {
  createDataFrame,
  DataQueryRequest,
  DataQueryResponse,
  DataSourceInstanceSettings,
  dateTime,
  LiveChannelScope,
  ScopedVars,
} from '@grafana/data';
import { DataSourceWithBackend, LiveDataStreamOptions } from '@grafana/runtime';
import { firstValueFrom, of, Subject, toArray } from 'rxjs';

import { DataSource, fnv1a } from './datasource';
import { SpangraphOptions, SpangraphQuery } from './types';

const variables: Record<string, string | string[]> = { job: 'api', env: ['prod', 'stage'] };

const mockGetDataStream = jest.fn();

// A minimal TemplateSrv: $name from scopedVars or the dashboard, formatted like Grafana does.
jest.mock('@grafana/runtime', () => ({
  ...jest.requireActual('@grafana/runtime'),
  getGrafanaLiveSrv: () => ({ getDataStream: mockGetDataStream }),
  getTemplateSrv: () => ({
    replace: (target = '', scopedVars?: ScopedVars, format?: (v: string | string[]) => string) =>
      target.replace(/\$(\w+)/g, (match: string, name: string) => {
        const value = scopedVars?.[name]?.value ?? variables[name];
        if (value === undefined) {
          return match;
        }
        return format ? format(value) : String(value);
      }),
  }),
}));

function makeDataSource(jsonData: SpangraphOptions = {}) {
  const ds = new DataSource({
    uid: 'spangraph',
    type: 'seed-spangraph-datasource',
    name: 'Spangraph',
    jsonData,
  } as DataSourceInstanceSettings<SpangraphOptions>);
  const getResource = jest.spyOn(ds, 'getResource');
  return { ds, getResource };
}

const ok = (data: unknown) => ({ status: 'success', data });
const range = { from: dateTime(1_700_000_000_000), to: dateTime(1_700_003_600_500), raw: { from: '', to: '' } };

describe('metricFindQuery', () => {
  it('label_names()', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['job', 'service_name']));
    expect(await ds.metricFindQuery('label_names()')).toEqual([{ text: 'job' }, { text: 'service_name' }]);
    expect(getResource).toHaveBeenCalledWith('api/v1/labels', {});
  });

  it('label_values(label) with the dashboard time range', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['checkout']));
    expect(await ds.metricFindQuery('label_values(service_name)', { range })).toEqual([{ text: 'checkout' }]);
    expect(getResource).toHaveBeenCalledWith('api/v1/label/service_name/values', {
      start: 1700000000,
      end: 1700003601,
    });
  });

  it('label_values(metric, label) interpolates variables into the selector', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['a:80']));
    await ds.metricFindQuery('label_values(up{job="$job", x=~"a,b"}, instance)');
    expect(getResource).toHaveBeenCalledWith('api/v1/label/instance/values', { 'match[]': 'up{job="api", x=~"a,b"}' });
  });

  it('metrics(regex) filters metric names', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['up', 'traces_spanmetrics_calls_total', 'traces_spanmetrics_latency_bucket']));
    expect(await ds.metricFindQuery('metrics(^traces_.*_total$)')).toEqual([
      { text: 'traces_spanmetrics_calls_total' },
    ]);
    expect(getResource).toHaveBeenCalledWith('api/v1/label/__name__/values', {});
  });

  it('query_result(expr) formats samples like the Prometheus datasource', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(
      ok({ resultType: 'vector', result: [{ metric: { __name__: 'up', job: 'api' }, value: [1700000000, '1'] }] })
    );
    expect(await ds.metricFindQuery('query_result(topk(1, up))', { range })).toEqual([
      { text: 'up{job="api"} 1 1700000000000' },
    ]);
    expect(getResource).toHaveBeenCalledWith('api/v1/query', { query: 'topk(1, up)', time: 1700003600 });
  });

  it('treats anything else as a series selector', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok([{ __name__: 'up', job: 'api', instance: 'a' }]));
    expect(await ds.metricFindQuery('up{job="api"}')).toEqual([{ text: 'up{job="api", instance="a"}' }]);
    expect(getResource).toHaveBeenCalledWith('api/v1/series', { 'match[]': 'up{job="api"}' });
  });

  it('surfaces API errors', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue({ status: 'error', error: 'bad_data: parse error' });
    await expect(ds.metricFindQuery('label_names()')).rejects.toThrow('bad_data: parse error');
  });
});

describe('applyTemplateVariables', () => {
  it('interpolates expr, service and filters and injects ad-hoc filters', () => {
    const { ds } = makeDataSource();
    const query: SpangraphQuery = {
      refId: 'A',
      expr: 'sum by (job) (rate(calls{job="$job", env=~"$env"}[5m]))',
      service: '$svc',
      filters: 'team="$job"',
    };
    const out = ds.applyTemplateVariables(query, { svc: { text: 'checkout', value: 'checkout' } }, [
      { key: 'region', operator: '=', value: 'eu' },
    ]);
    expect(out).toEqual({
      refId: 'A',
      queryType: 'promql',
      expr: 'sum by (job) (rate(calls{job="api", env=~"(prod|stage)",region="eu"}[5m]))',
      service: 'checkout',
      filters: 'team="api",region="eu"',
    });
  });

  it('leaves $__interval to the backend and interpolates the legend and the min step', () => {
    const { ds } = makeDataSource();
    const scoped: ScopedVars = {
      __interval: { text: '2s', value: '2s' },
      __interval_ms: { text: '2000', value: '2000' },
      step: { text: '1m', value: '1m' },
    };
    const out = ds.applyTemplateVariables(
      {
        refId: 'A',
        expr: 'rate(x[$__interval]) > $__interval_ms',
        legendFormat: '{{service}} $job',
        interval: '$step',
      },
      scoped
    );
    expect(out).toMatchObject({
      expr: 'rate(x[$__interval]) > $__interval_ms',
      legendFormat: '{{service}} api',
      interval: '1m',
    });
  });

  it('puts ad-hoc filters into filters for service graph queries', () => {
    const { ds } = makeDataSource({ defaultQueryType: 'serviceGraph' });
    const out = ds.applyTemplateVariables({ refId: 'A' }, {}, [{ key: 'env', operator: '!=', value: 'dev' }]);
    expect(out).toMatchObject({ queryType: 'serviceGraph', filters: 'env!="dev"' });
  });
});

describe('ad-hoc filter keys and values', () => {
  it('getTagKeys narrows by the other filters and hides __name__', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['__name__', 'service_name']));
    const keys = await ds.getTagKeys({ filters: [{ key: 'env', operator: '=', value: 'prod' }] });
    expect(keys).toEqual([{ text: 'service_name' }]);
    expect(getResource).toHaveBeenCalledWith('api/v1/labels', { 'match[]': '{env="prod"}' });
  });

  it('getTagValues reads the label values', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockResolvedValue(ok(['checkout']));
    expect(await ds.getTagValues({ key: 'service_name', filters: [] })).toEqual([{ text: 'checkout' }]);
    expect(getResource).toHaveBeenCalledWith('api/v1/label/service_name/values', {});
  });
});

describe('query helpers', () => {
  it('serviceNames merges client and server labels of the service graph metric', async () => {
    const { ds, getResource } = makeDataSource();
    getResource.mockImplementation(async (path: string) => ok(path.includes('/client/') ? ['b', 'a'] : ['c', 'a']));
    expect(await ds.serviceNames()).toEqual(['a', 'b', 'c']);
    expect(getResource).toHaveBeenCalledWith('api/v1/label/server/values', {
      'match[]': 'traces_service_graph_request_total',
    });
  });

  it('filterQuery drops hidden and empty PromQL queries only', () => {
    const { ds } = makeDataSource();
    expect(ds.filterQuery({ refId: 'A', expr: 'up' })).toBe(true);
    expect(ds.filterQuery({ refId: 'A', expr: 'up', hide: true })).toBe(false);
    expect(ds.filterQuery({ refId: 'A', expr: '  ' })).toBe(false);
    expect(ds.filterQuery({ refId: 'A', queryType: 'serviceGraph' })).toBe(true);
  });

  it('getDefaultQuery follows the configured default type', () => {
    const { ds } = makeDataSource({ defaultQueryType: 'redTable' });
    expect(ds.getDefaultQuery('explore' as never)).toEqual({
      queryType: 'redTable',
      groupBy: 'service',
      spanKinds: ['SPAN_KIND_SERVER'],
    });
  });

  it('getQueryDisplayText describes each query type', () => {
    const { ds } = makeDataSource();
    expect(ds.getQueryDisplayText({ refId: 'A', expr: 'up' })).toBe('up');
    expect(ds.getQueryDisplayText({ refId: 'A', queryType: 'serviceGraph', service: 'checkout', depth: 3 })).toBe(
      'Service graph: checkout, depth 3'
    );
    expect(ds.getQueryDisplayText({ refId: 'A', queryType: 'redTable', spanKinds: ['SPAN_KIND_SERVER'] })).toBe(
      'RED table by service: SPAN_KIND_SERVER'
    );
  });
});

describe('live queries', () => {
  const hour = { from: dateTime(1_700_000_000_000), to: dateTime(1_700_003_600_000), raw: { from: '', to: '' } };
  const liveGraph: SpangraphQuery = {
    refId: 'A',
    queryType: 'serviceGraph',
    live: true,
    service: '$svc',
    depth: 2,
    filters: 'team="$job"',
  };
  const request = (...targets: SpangraphQuery[]) =>
    ({
      targets,
      range: hour,
      scopedVars: { svc: { text: 'checkout', value: 'checkout' } },
      requestId: 'Q1',
    }) as unknown as DataQueryRequest<SpangraphQuery>;
  const addrOf = (call: number) => (mockGetDataStream.mock.calls[call][0] as LiveDataStreamOptions).addr;

  let stream: Subject<DataQueryResponse>;
  let backendQuery: jest.SpyInstance;
  beforeEach(() => {
    stream = new Subject();
    mockGetDataStream.mockReset().mockReturnValue(stream);
    backendQuery = jest
      .spyOn(DataSourceWithBackend.prototype, 'query')
      .mockReturnValue(of({ data: [createDataFrame({ refId: 'B', fields: [] })] }));
  });
  afterEach(() => backendQuery.mockRestore());

  it('subscribes to the datasource stream with the interpolated query and the time range as window', () => {
    const { ds } = makeDataSource();
    ds.query(request(liveGraph)).subscribe();

    expect(mockGetDataStream).toHaveBeenCalledTimes(1);
    const addr = addrOf(0);
    expect(addr).toMatchObject({ scope: LiveChannelScope.DataSource, namespace: 'spangraph', stream: 'spangraph' });
    expect(addr.path).toMatch(/^serviceGraph\/[0-9a-f]{8}$/);
    expect(addr.data).toEqual({
      ...liveGraph,
      service: 'checkout',
      filters: 'team="api"',
      window: '3600s',
    });
    expect(backendQuery).not.toHaveBeenCalled();
  });

  it('names the stream by a stable hash of the query', () => {
    const { ds } = makeDataSource();
    const pathOf = (q: SpangraphQuery) => {
      ds.query(request(q)).subscribe();
      return addrOf(mockGetDataStream.mock.calls.length - 1).path;
    };
    const path = pathOf(liveGraph);
    expect(pathOf({ ...liveGraph })).toBe(path);
    // refId and field order do not change the query, so panels can share the stream.
    expect(pathOf({ depth: 2, ...liveGraph, refId: 'Z' })).toBe(path);
    expect(pathOf({ ...liveGraph, service: 'payments' })).not.toBe(path);
    expect(pathOf({ ...liveGraph, queryType: 'redTable' })).toMatch(/^redTable\//);
    expect(fnv1a('')).toBe('811c9dc5');
    expect(fnv1a('a')).toBe('e40c292c');
  });

  it('sends the other queries to the backend and merges the results', async () => {
    const { ds } = makeDataSource();
    const promql: SpangraphQuery = { refId: 'B', expr: 'up' };
    const graph: SpangraphQuery = { refId: 'C', queryType: 'serviceGraph' };
    const responses: DataQueryResponse[] = [];
    ds.query(request(liveGraph, promql, graph)).subscribe((r) => responses.push(r));

    expect(backendQuery).toHaveBeenCalledTimes(1);
    expect(backendQuery.mock.calls[0][0].targets).toEqual([promql, graph]);
    expect(mockGetDataStream).toHaveBeenCalledTimes(1);
    expect(responses.map((r) => r.data[0].refId)).toEqual(['B']);
  });

  it('leaves requests without live queries to the backend as they are', async () => {
    const { ds } = makeDataSource();
    const req = request({ refId: 'A', queryType: 'redTable' }, { ...liveGraph, refId: 'B', queryType: 'promql' });
    await firstValueFrom(ds.query(req));
    expect(backendQuery).toHaveBeenCalledWith(req);
    expect(mockGetDataStream).not.toHaveBeenCalled();
  });

  it('skips hidden live queries', async () => {
    const { ds } = makeDataSource();
    expect(await firstValueFrom(ds.query(request({ ...liveGraph, hide: true })))).toEqual({ data: [] });
    expect(mockGetDataStream).not.toHaveBeenCalled();
    expect(backendQuery).not.toHaveBeenCalled();
  });

  it("keeps the latest nodes and edges frames, with the query's refId", async () => {
    const { ds } = makeDataSource();
    const responses = firstValueFrom(ds.query(request(liveGraph)).pipe(toArray()));
    const frame = (name: string, ids: string[]) => createDataFrame({ name, fields: [{ name: 'id', values: ids }] });

    stream.next({ data: [createDataFrame({ fields: [] })] }); // Grafana's placeholder before the first frame
    stream.next({ data: [frame('nodes', ['a', 'b'])] });
    stream.next({ data: [frame('edges', ['a-b'])] });
    stream.next({ data: [frame('nodes', ['a', 'b', 'c'])] });
    stream.complete();

    const ids = (await responses).map((r) => r.data.map((f) => `${f.refId}:${f.name}:${f.fields[0].values.join(',')}`));
    expect(ids).toEqual([[], ['A:nodes:a,b'], ['A:nodes:a,b', 'A:edges:a-b'], ['A:nodes:a,b,c', 'A:edges:a-b']]);
  });
});
