import type { PrometheusClient } from '@prometheus-io/codemirror-promql';
import { EqlRegex, EqlSingle, Neq, NeqRegex } from '@prometheus-io/lezer-promql';

import { escapeLabelValue } from './promql';

/** A label matcher as the PromQL grammar hands it over: the operator is the grammar's token id. */
interface GrammarMatcher {
  type: number;
  name: string;
  value: string;
}

/** What the completion needs of the datasource: the Prometheus metadata API behind its resources. */
export interface MetadataSource {
  metricNames(): Promise<string[]>;
  labelNames(match?: string): Promise<string[]>;
  labelValues(label: string, match?: string): Promise<string[]>;
  series(match: string): Promise<Array<Record<string, string>>>;
}

const OPERATORS: Record<number, string> = { [EqlSingle]: '=', [Neq]: '!=', [EqlRegex]: '=~', [NeqRegex]: '!~' };

/** A series selector for a metric and matchers, or undefined for "every series". */
function selector(metricName?: string, matchers: GrammarMatcher[] = []): string | undefined {
  const parts = matchers
    .filter((m) => m.name !== '__name__' && OPERATORS[m.type])
    .map((m) => `${m.name}${OPERATORS[m.type]}"${escapeLabelValue(m.value)}"`);
  if (metricName) {
    parts.unshift(`__name__="${escapeLabelValue(metricName)}"`);
  }
  return parts.length ? `{${parts.join(',')}}` : undefined;
}

/**
 * The PrometheusClient of the PromQL editor's grammar-based completion (@prometheus-io/codemirror-promql), answered
 * from the datasource's own resources rather than a Prometheus URL, so it completes the tenant's real metrics and
 * labels (`service`, `span_name`, …) through Grafana's authentication.
 */
export class DatasourcePromClient implements PrometheusClient {
  constructor(private readonly source: MetadataSource) {}

  labelNames(metricName?: string): Promise<string[]> {
    return this.source.labelNames(selector(metricName));
  }

  labelValues(labelName: string, metricName?: string, matchers?: GrammarMatcher[]): Promise<string[]> {
    return this.source.labelValues(labelName, selector(metricName, matchers));
  }

  /** Spangraph keeps no metric metadata; completion then shows names without help text. */
  metricMetadata(): Promise<Record<string, Array<{ type: string; help: string }>>> {
    return Promise.resolve({});
  }

  async series(
    metricName: string,
    matchers?: GrammarMatcher[],
    labelName?: string
  ): Promise<Array<Map<string, string>>> {
    const match = selector(metricName, matchers) ?? `{__name__="${escapeLabelValue(metricName)}"}`;
    const series = await this.source.series(match);
    return series
      .filter((labels) => !labelName || labelName in labels)
      .map((labels) => new Map(Object.entries(labels)));
  }

  metricNames(): Promise<string[]> {
    return this.source.metricNames();
  }

  /** No Prometheus flags to report: the grammar's defaults apply. */
  flags(): Promise<Record<string, string>> {
    return Promise.resolve({});
  }
}
