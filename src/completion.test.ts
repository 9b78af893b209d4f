import { cachingProvider, CompletionProvider, getCompletionContext, getCompletions, rankByPrefix } from './completion';

/** `|` marks the cursor. */
function contextAt(textWithCursor: string) {
  const offset = textWithCursor.indexOf('|');
  return getCompletionContext(textWithCursor.replace('|', ''), offset);
}

describe('getCompletionContext', () => {
  it.each([
    ['|', { kind: 'metric', prefix: '', from: 0 }],
    ['traces_sp|', { kind: 'metric', prefix: 'traces_sp', from: 0 }],
    ['rate(traces_|', { kind: 'metric', prefix: 'traces_', from: 5 }],
    ['a + |', { kind: 'metric', prefix: '', from: 4 }],
    ['x{|', { kind: 'labelName', metric: 'x', prefix: '', from: 2 }],
    ['x{serv|', { kind: 'labelName', metric: 'x', prefix: 'serv', from: 2 }],
    ['x{a="b", |', { kind: 'labelName', metric: 'x', prefix: '', from: 9 }],
    ['{span_k|}', { kind: 'labelName', metric: undefined, prefix: 'span_k', from: 1 }],
    ['sum by (serv|', { kind: 'labelName', metric: undefined, prefix: 'serv', from: 8 }],
    ['x{service_name=|', { kind: 'labelValue', metric: 'x', label: 'service_name', prefix: '', from: 15 }],
    [
      'x{service_name=~"fro|',
      { kind: 'labelValue', metric: 'x', label: 'service_name', prefix: 'fro', from: 17, quote: '"' },
    ],
    ['rate(x{job="|"}[5m])', { kind: 'labelValue', metric: 'x', label: 'job', prefix: '', from: 12, quote: '"' }],
  ])('%s', (text, expected) => {
    expect(contextAt(text)).toEqual(expected);
  });

  it.each(['rate(x[5|', 'sum |', 'x{a="b"} |', 'x{a="b" |', '"str|'])('offers nothing in %s', (text) => {
    expect(contextAt(text)).toEqual({ kind: 'none' });
  });
});

describe('getCompletions', () => {
  const provider: jest.Mocked<CompletionProvider> = {
    metricNames: jest.fn(async () => ['up', 'traces_spanmetrics_calls_total', 'traces_service_graph_request_total']),
    labelNames: jest.fn<Promise<string[]>, [string?]>(async () => ['service_name', 'span_kind']),
    labelValues: jest.fn<Promise<string[]>, [string, string?]>(async () => ['checkout', 'front"end']),
  };

  it('suggests metric names matching the prefix, prefix matches first', async () => {
    const result = await getCompletions('sum(rate(traces_s', 17, provider);
    expect(result).toEqual({
      from: 9,
      to: 17,
      items: [
        { label: 'traces_spanmetrics_calls_total', insertText: 'traces_spanmetrics_calls_total' },
        { label: 'traces_service_graph_request_total', insertText: 'traces_service_graph_request_total' },
      ],
    });
  });

  it('asks for label names of the selector metric', async () => {
    const result = await getCompletions('traces_spanmetrics_calls_total{sp', 33, provider);
    expect(provider.labelNames).toHaveBeenCalledWith('traces_spanmetrics_calls_total');
    expect(result?.items.map((i) => i.label)).toEqual(['span_kind']);
    expect(result?.from).toBe(31);
  });

  it('quotes and escapes label values', async () => {
    const text = 'x{service_name=';
    const result = await getCompletions(text, text.length, provider);
    expect(provider.labelValues).toHaveBeenCalledWith('service_name', 'x');
    expect(result?.items.map((i) => i.insertText)).toEqual(['"checkout"', '"front\\"end"']);
  });

  it('closes an open string but does not double an existing closing quote', async () => {
    expect((await getCompletions('x{a="ch', 7, provider))?.items[0].insertText).toBe('checkout"');
    expect((await getCompletions('x{a="ch"}', 7, provider))?.items[0].insertText).toBe('checkout');
  });

  it('returns nothing when no name matches', async () => {
    expect(await getCompletions('zzz', 3, provider)).toBeUndefined();
  });
});

describe('rankByPrefix', () => {
  it('matches case-insensitively and limits the count', () => {
    expect(rankByPrefix(['a_calls', 'calls_b', 'CALLS_c', 'other'], 'calls', 2)).toEqual(['calls_b', 'CALLS_c']);
  });
});

describe('cachingProvider', () => {
  it('fetches each lookup once and retries after a failure', async () => {
    const labelValues = jest
      .fn<Promise<string[]>, [string, string | undefined]>()
      .mockRejectedValueOnce(new Error('down'))
      .mockResolvedValue(['a']);
    const cached = cachingProvider({ metricNames: jest.fn(), labelNames: jest.fn(), labelValues });

    await expect(cached.labelValues('job')).rejects.toThrow('down');
    expect(await cached.labelValues('job')).toEqual(['a']);
    expect(await cached.labelValues('job')).toEqual(['a']);
    expect(labelValues).toHaveBeenCalledTimes(2);
  });
});
