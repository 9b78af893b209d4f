import { DataSourceInstanceSettings, dateTime, ScopedVars } from '@grafana/data';

import { DataSource } from './datasource';
import { SpangraphOptions, SpangraphQuery } from './types';

const variables: Record<string, string | string[]> = { job: 'api', env: ['prod', 'stage'] };

// A minimal TemplateSrv: $name from scopedVars or the dashboard, formatted like Grafana does.
jest.mock('@grafana/runtime', () => ({
  ...jest.requireActual('@grafana/runtime'),
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
      topN: 20,
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
