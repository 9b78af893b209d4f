import {
  CoreApp,
  DataFrame,
  DataFrameType,
  DataQueryRequest,
  DataQueryResponse,
  Field,
  FieldType,
  Labels,
  sortDataFrame,
} from '@grafana/data';

import { SpangraphQuery } from './types';

/**
 * Shapes PromQL results the way Grafana's Prometheus datasource does in its frontend (`transformV2`): the backend
 * answers every PromQL query with plain series, which alert rules and server-side expressions read, and the table
 * and heatmap formats, and the table Explore shows for an instant query, are made here from those series.
 * Service graph and RED table frames pass through untouched.
 */
export function transformPromQLResponse(
  response: DataQueryResponse,
  request: DataQueryRequest<SpangraphQuery>
): DataQueryResponse {
  const targets = new Map(request.targets.map((t) => [t.refId, t]));
  const isPromQL = (f: DataFrame) => f.meta?.custom?.resultType !== undefined && targets.has(f.refId ?? '');
  const frames: DataFrame[] = response.data;
  if (!frames.some(isPromQL)) {
    return response;
  }

  const tables: DataFrame[] = [];
  const heatmaps: DataFrame[] = [];
  const rest: DataFrame[] = [];
  for (const frame of frames) {
    const target = targets.get(frame.refId ?? '');
    const resultType = frame.meta?.custom?.resultType;
    if (!isPromQL(frame) || resultType === 'exemplar') {
      rest.push(frame);
    } else if (isTableResult(frame, target, request.app)) {
      tables.push(frame);
    } else if (target?.format === 'heatmap') {
      heatmaps.push(frame);
    } else {
      rest.push({ ...frame, meta: { ...frame.meta, preferredVisualisationType: 'graph' } });
    }
  }
  return { ...response, data: [...rest, ...toTables(tables), ...toHeatmaps(heatmaps)] };
}

/** Explore shows instant vectors and scalars as a table; any query of format table is one. */
function isTableResult(frame: DataFrame, target: SpangraphQuery | undefined, app?: string): boolean {
  const resultType = frame.meta?.custom?.resultType;
  if (app === CoreApp.Explore && (resultType === 'vector' || resultType === 'scalar')) {
    return true;
  }
  return target?.format === 'table';
}

/** The value field of a series frame: the first number field. */
function valueField(frame: DataFrame): Field | undefined {
  return frame.fields.find((f) => f.type === FieldType.number);
}

function timeField(frame: DataFrame): Field | undefined {
  return frame.fields.find((f) => f.type === FieldType.time);
}

function groupBy<T>(items: T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const k = key(item);
    groups.set(k, [...(groups.get(k) ?? []), item]);
  }
  return groups;
}

/**
 * One table per query: Time, a column per label (filterable, so that a click in the table adds it as a filter) and
 * the values in `Value`, or in `Value #<refId>` when several queries return tables, so that their columns stay apart
 * (Grafana's Tempo service map reads its queries' columns by these names).
 */
export function toTables(frames: DataFrame[]): DataFrame[] {
  if (frames.length === 0) {
    return [];
  }
  const byRefId = groupBy(frames, (f) => f.refId ?? '');
  return [...byRefId.entries()].map(([refId, group]) => {
    const labelNames: string[] = [];
    for (const frame of group) {
      for (const name of Object.keys(valueField(frame)?.labels ?? {}).sort()) {
        if (!labelNames.includes(name)) {
          labelNames.push(name);
        }
      }
    }
    const times: number[] = [];
    const values: Array<number | null> = [];
    const labelValues: string[][] = labelNames.map(() => []);
    let interval: number | undefined;
    for (const frame of group) {
      const time = timeField(frame);
      const value = valueField(frame);
      if (!time || !value) {
        continue;
      }
      interval ??= time.config.interval ?? undefined;
      const labels: Labels = value.labels ?? {};
      for (let i = 0; i < value.values.length; i++) {
        times.push(time.values[i]);
        values.push(value.values[i]);
        labelNames.forEach((name, j) => labelValues[j].push(labels[name] ?? ''));
      }
    }
    const fields: Field[] = [
      { name: 'Time', type: FieldType.time, config: interval ? { interval } : {}, values: times },
      ...labelNames.map((name, j) => ({
        name,
        type: FieldType.string,
        config: { filterable: true },
        values: labelValues[j],
      })),
      { name: byRefId.size > 1 ? `Value #${refId}` : 'Value', type: FieldType.number, config: {}, values },
    ];
    const table: DataFrame = {
      refId,
      fields,
      length: times.length,
      // Explore's table view of Prometheus results.
      meta: { ...group[0].meta, preferredVisualisationType: 'rawPrometheus' },
    };
    return times.some((t, i) => i > 0 && t < times[i - 1]) ? sortDataFrame(table, 0) : table;
  });
}

/** The bucket bound of a series, +Inf included; NaN when it has none. */
function upperBound(frame: DataFrame): number {
  const le = valueField(frame)?.labels?.le;
  if (le === undefined) {
    return NaN;
  }
  return /^\+?inf/i.test(le) ? Infinity : parseFloat(le);
}

/**
 * The heatmap format: the buckets of each histogram (the series of a query that share every label but `le`) become
 * one heatmap-rows frame whose fields, ordered by bound, hold each bucket's own count rather than the cumulative
 * one. Buckets of different histograms (services, routes) are never subtracted from one another, and differences
 * below 1e-9, which float arithmetic leaves where two buckets are equal, are 0. Values are matched by timestamp.
 */
export function toHeatmaps(frames: DataFrame[]): DataFrame[] {
  const out: DataFrame[] = [];
  for (const [, group] of groupBy(frames, (f) => f.refId ?? '')) {
    const histograms = groupBy(group, (f) => {
      const { le: _le, ...others } = valueField(f)?.labels ?? {};
      return JSON.stringify(Object.entries(others).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
    });
    for (const [key, series] of histograms) {
      const buckets = series.filter((f) => !isNaN(upperBound(f))).sort((a, b) => upperBound(a) - upperBound(b));
      if (buckets.length === 0) {
        continue;
      }
      const times = [...new Set(buckets.flatMap((f) => timeField(f)?.values ?? []))].sort((a, b) => a - b);
      const cumulative = buckets.map((f) => {
        const byTime = new Map<number, number>();
        const time = timeField(f)!;
        valueField(f)!.values.forEach((v, i) => byTime.set(time.values[i], v));
        return times.map((t) => byTime.get(t) ?? null);
      });
      const counts = cumulative.map((values, j) =>
        values.map((v, i) => {
          if (v === null) {
            return null;
          }
          const count = v - (j > 0 ? (cumulative[j - 1][i] ?? 0) : 0);
          return count < 1e-9 ? 0 : count;
        })
      );
      const labels: Labels = Object.fromEntries(JSON.parse(key));
      out.push({
        refId: buckets[0].refId,
        name: Object.entries(labels)
          .map(([k, v]) => `${k}="${v}"`)
          .join(', '),
        meta: { ...buckets[0].meta, type: DataFrameType.HeatmapRows },
        length: times.length,
        fields: [
          { ...timeField(buckets[0])!, values: times },
          ...buckets.map((f, j) => {
            const le = valueField(f)!.labels!.le;
            return {
              name: le,
              type: FieldType.number,
              labels,
              config: { ...valueField(f)!.config, displayNameFromDS: le },
              values: counts[j],
            };
          }),
        ],
      });
    }
  }
  return out;
}
