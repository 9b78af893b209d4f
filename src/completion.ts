import { escapeLabelValue, LABEL_LIST_KEYWORDS, MATCH_OPS, Token, tokenize } from './promql';

/**
 * PromQL completion kept free of any editor so it runs under jest (Monaco does not run in jsdom):
 * the editor passes text and cursor offset, and gets back what to replace and with what.
 */
export type CompletionContext =
  | { kind: 'metric'; prefix: string; from: number }
  | { kind: 'labelName'; metric?: string; prefix: string; from: number }
  | { kind: 'labelValue'; metric?: string; label: string; prefix: string; from: number; quote?: Quote }
  | { kind: 'none' };

type Quote = '"' | "'" | '`';

export interface CompletionProvider {
  metricNames(): Promise<string[]>;
  labelNames(metric?: string): Promise<string[]>;
  labelValues(label: string, metric?: string): Promise<string[]>;
}

export interface CompletionItem {
  label: string;
  insertText: string;
}

export interface Completions {
  from: number;
  to: number;
  items: CompletionItem[];
}

interface Open {
  token: Token;
  index: number;
  labelList: boolean;
}

/** Where expressions may start, so a metric name is expected next. */
const EXPRESSION_START = new Set(['(', ',', '+', '-', '*', '/', '%', '^', '==', '!=', '<=', '>=', '<', '>']);

export function getCompletionContext(text: string, offset: number): CompletionContext {
  const all = tokenize(text.slice(0, offset));
  const tokens = all.filter((t) => t.kind !== 'space');
  const cursorAfterSpace = all[all.length - 1]?.kind === 'space';
  const stack: Open[] = [];
  tokens.forEach((t, index) => {
    if (t.kind !== 'op') {
      return;
    }
    if (t.text === '{' || t.text === '[' || t.text === '(') {
      const prev = tokens[index - 1];
      const labelList = t.text === '(' && prev?.kind === 'ident' && LABEL_LIST_KEYWORDS.has(prev.text.toLowerCase());
      stack.push({ token: t, index, labelList });
    } else if (t.text === '}' || t.text === ']' || t.text === ')') {
      stack.pop();
    }
  });

  const open = stack[stack.length - 1];
  const last = tokens[tokens.length - 1];
  const beforeLast = tokens[tokens.length - 2];

  if (open?.token.text === '[') {
    return { kind: 'none' };
  }

  if (open?.token.text === '{') {
    const selectorName = tokens[open.index - 1];
    const metric = selectorName?.kind === 'ident' ? selectorName.text : undefined;
    // Inside a label value string that is still open: `job="ap|`.
    if (last?.kind === 'string' && !last.closed) {
      const op = beforeLast;
      const label = tokens[tokens.length - 3];
      if (op?.kind === 'op' && MATCH_OPS.has(op.text) && label?.kind === 'ident') {
        return {
          kind: 'labelValue',
          metric,
          label: label.text,
          prefix: last.text.slice(1),
          from: last.start + 1,
          quote: last.text[0] as Quote,
        };
      }
      return { kind: 'none' };
    }
    // Right after a match operator: `job=|`.
    if (last?.kind === 'op' && MATCH_OPS.has(last.text) && beforeLast?.kind === 'ident') {
      return { kind: 'labelValue', metric, label: beforeLast.text, prefix: '', from: offset };
    }
    return labelNameContext(last, beforeLast, cursorAfterSpace, offset, metric, ['{', ',']);
  }

  if (open?.labelList) {
    return labelNameContext(last, beforeLast, cursorAfterSpace, offset, undefined, ['(', ',']);
  }

  if (last?.kind === 'ident' && !cursorAfterSpace) {
    return { kind: 'metric', prefix: last.text, from: last.start };
  }
  if (!last || (last.kind === 'op' && EXPRESSION_START.has(last.text))) {
    return { kind: 'metric', prefix: '', from: offset };
  }
  return { kind: 'none' };
}

function labelNameContext(
  last: Token | undefined,
  beforeLast: Token | undefined,
  cursorAfterSpace: boolean,
  offset: number,
  metric: string | undefined,
  separators: string[]
): CompletionContext {
  const isSeparator = (t: Token | undefined) => t?.kind === 'op' && separators.includes(t.text);
  if (last?.kind === 'ident' && !cursorAfterSpace && isSeparator(beforeLast)) {
    return { kind: 'labelName', metric, prefix: last.text, from: last.start };
  }
  if (isSeparator(last)) {
    return { kind: 'labelName', metric, prefix: '', from: offset };
  }
  return { kind: 'none' };
}

/** Case-insensitive substring match, names starting with the prefix first. */
export function rankByPrefix(names: string[], prefix: string, limit: number): string[] {
  const p = prefix.toLowerCase();
  const matching = names.filter((n) => n.toLowerCase().includes(p));
  const starts = matching.filter((n) => n.toLowerCase().startsWith(p));
  const contains = matching.filter((n) => !n.toLowerCase().startsWith(p));
  return [...starts, ...contains].slice(0, limit);
}

export async function getCompletions(
  text: string,
  offset: number,
  provider: CompletionProvider,
  limit = 100
): Promise<Completions | undefined> {
  const ctx = getCompletionContext(text, offset);
  if (ctx.kind === 'none') {
    return undefined;
  }
  let names: string[];
  let insert: (name: string) => string = (name) => name;
  if (ctx.kind === 'metric') {
    names = await provider.metricNames();
  } else if (ctx.kind === 'labelName') {
    names = await provider.labelNames(ctx.metric);
  } else {
    names = await provider.labelValues(ctx.label, ctx.metric);
    const quote = ctx.quote;
    // Close the string unless the user (or an auto-pair) already did.
    insert = quote
      ? (v) => (quote === '`' ? v : escapeLabelValue(v, quote)) + (text[offset] === quote ? '' : quote)
      : (v) => `"${escapeLabelValue(v)}"`;
  }
  const items = rankByPrefix(names, ctx.prefix, limit).map((name) => ({ label: name, insertText: insert(name) }));
  return items.length ? { from: ctx.from, to: offset, items } : undefined;
}

/** Memoises provider lookups so typing does not refetch the same label values on every key. */
export function cachingProvider(provider: CompletionProvider): CompletionProvider {
  const cache = new Map<string, Promise<string[]>>();
  const memo = (key: string, load: () => Promise<string[]>) => {
    let hit = cache.get(key);
    if (!hit) {
      // Failed lookups are forgotten so the next keystroke retries them.
      hit = load().catch((err) => {
        cache.delete(key);
        throw err;
      });
      cache.set(key, hit);
    }
    return hit;
  };
  return {
    metricNames: () => memo('metrics', () => provider.metricNames()),
    labelNames: (metric) => memo(`labels:${metric ?? ''}`, () => provider.labelNames(metric)),
    labelValues: (label, metric) => memo(`values:${label}:${metric ?? ''}`, () => provider.labelValues(label, metric)),
  };
}
