import { adHocFiltersToMatchers, escapeLabelValue, formatPromQLVariable, injectLabelMatchers } from './promql';

describe('injectLabelMatchers', () => {
  const m = 'env="prod"';

  it.each([
    ['up', 'up{env="prod"}'],
    ['up{job="a"}', 'up{job="a",env="prod"}'],
    ['up{}', 'up{env="prod"}'],
    ['up{job="a",}', 'up{job="a",env="prod"}'],
    ['{__name__="up"}', '{__name__="up",env="prod"}'],
    ['rate(x[5m])', 'rate(x{env="prod"}[5m])'],
    ['x offset 5m', 'x{env="prod"} offset 5m'],
    ['up == bool 1', 'up{env="prod"} == bool 1'],
    ['sum(up) by (job)', 'sum(up{env="prod"}) by (job)'],
    [
      'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="}"}[5m])))',
      'histogram_quantile(0.9, sum by (le) (rate(x_bucket{a="}",env="prod"}[5m])))',
    ],
    ['a / on(job) group_left b', 'a{env="prod"} / on(job) group_left b{env="prod"}'],
    ['label_replace(up, "dst", "{x}", "src", "(.*)")', 'label_replace(up{env="prod"}, "dst", "{x}", "src", "(.*)")'],
    ['max_over_time(x[1h:5m])', 'max_over_time(x{env="prod"}[1h:5m])'],
  ])('%s', (expr, expected) => {
    expect(injectLabelMatchers(expr, m)).toBe(expected);
  });

  it.each(['up{job="a"', 'up{job="a}', 'rate(x[5m)'])('leaves unbalanced %s untouched', (expr) => {
    expect(injectLabelMatchers(expr, m)).toBe(expr);
  });

  it('is a no-op without matchers', () => {
    expect(injectLabelMatchers('up', '')).toBe('up');
  });
});

describe('adHocFiltersToMatchers', () => {
  it('keeps PromQL operators, escapes values and drops what PromQL cannot express', () => {
    expect(
      adHocFiltersToMatchers([
        { key: 'service_name', operator: '=', value: 'check"out' },
        { key: 'span_name', operator: '=~', value: 'GET \\d+' },
        { key: 'duration', operator: '>', value: '5' },
        { key: 'bad key', operator: '=', value: 'x' },
      ])
    ).toBe('service_name="check\\"out",span_name=~"GET \\\\d+"');
  });
});

describe('escapeLabelValue', () => {
  it('escapes the delimiting quote only', () => {
    expect(escapeLabelValue(`it's "x"`, "'")).toBe(`it\\'s "x"`);
  });
});

describe('formatPromQLVariable', () => {
  it('passes single values through and turns multi-values into an escaped alternation', () => {
    expect(formatPromQLVariable('a.b')).toBe('a.b');
    expect(formatPromQLVariable(['a.b'])).toBe('a\\\\.b');
    expect(formatPromQLVariable(['a', 'b.c'])).toBe('(a|b\\\\.c)');
  });
});
