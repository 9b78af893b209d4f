import { AdHocVariableFilter } from '@grafana/data';

/**
 * A deliberately small PromQL lexer: enough to find vector selectors, strings and label lists for
 * ad-hoc filter injection and editor completion, without shipping a full PromQL parser.
 */
export type TokenKind = 'ident' | 'number' | 'string' | 'op' | 'space';

export interface Token {
  kind: TokenKind;
  text: string;
  start: number;
  end: number;
  /** false for a string literal that runs to the end of the input (the user is still typing it). */
  closed?: boolean;
}

const TWO_CHAR_OPS = new Set(['=~', '!~', '!=', '==', '<=', '>=']);
export const MATCH_OPS = new Set(['=', '!=', '=~', '!~']);
/** Keywords whose following parenthesis holds label names, not an expression. */
export const LABEL_LIST_KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);
const OTHER_KEYWORDS = new Set(['bool', 'and', 'or', 'unless', 'offset', 'atan2', 'inf', 'nan']);
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

export function tokenize(src: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const push = (kind: TokenKind, end: number, closed?: boolean) => {
    tokens.push({ kind, text: src.slice(i, end), start: i, end, closed });
    i = end;
  };
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) {
      let j = i + 1;
      while (j < src.length && /\s/.test(src[j])) {
        j++;
      }
      push('space', j);
    } else if (c === '#') {
      const nl = src.indexOf('\n', i);
      push('space', nl < 0 ? src.length : nl);
    } else if (c === '"' || c === "'" || c === '`') {
      let j = i + 1;
      // Backtick strings are raw in PromQL; the others honour backslash escapes.
      while (j < src.length && src[j] !== c) {
        j += src[j] === '\\' && c !== '`' ? 2 : 1;
      }
      push('string', Math.min(j + 1, src.length), j < src.length);
    } else if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(src[i + 1] ?? ''))) {
      // Covers floats, hex, exponents and durations such as 1h30m in one token.
      let j = i + 1;
      while (j < src.length && /[0-9a-zA-Z_.]/.test(src[j])) {
        j++;
      }
      push('number', j);
    } else if (/[a-zA-Z_:]/.test(c)) {
      let j = i + 1;
      while (j < src.length && /[a-zA-Z0-9_:]/.test(src[j])) {
        j++;
      }
      push('ident', j);
    } else {
      push('op', TWO_CHAR_OPS.has(src.slice(i, i + 2)) ? i + 2 : i + 1);
    }
  }
  return tokens;
}

const isOp = (t: Token | undefined, text: string) => t?.kind === 'op' && t.text === text;

/** Index of the token closing the bracket opened at `open`, or -1 when it is unbalanced. */
function findClose(tokens: Token[], open: number): number {
  const opener = tokens[open].text;
  const closer = opener === '{' ? '}' : opener === '[' ? ']' : ')';
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (isOp(tokens[i], opener)) {
      depth++;
    } else if (isOp(tokens[i], closer) && --depth === 0) {
      return i;
    }
  }
  return -1;
}

/**
 * Adds `matchers` (e.g. `env="prod",team=~"a|b"`) to every vector selector in `expr`.
 * Returns `expr` unchanged when it cannot be lexed safely (unbalanced brackets or an open string):
 * the same matchers also travel in the query's `filters` field for the backend.
 */
export function injectLabelMatchers(expr: string, matchers: string): string {
  if (!matchers) {
    return expr;
  }
  const tokens = tokenize(expr).filter((t) => t.kind !== 'space');
  const inserts: Array<{ at: number; text: string }> = [];
  let labelListPending = false;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.kind === 'string' && !t.closed) {
      return expr;
    }
    const opensLabelList = labelListPending && isOp(t, '(');
    labelListPending = false;
    if (isOp(t, '{') || isOp(t, '[') || opensLabelList) {
      const close = findClose(tokens, i);
      if (close < 0) {
        return expr;
      }
      if (t.text === '{') {
        const last = tokens[close - 1];
        const comma = close - 1 > i && !isOp(last, ',') ? ',' : '';
        inserts.push({ at: tokens[close].start, text: comma + matchers });
      }
      i = close;
      continue;
    }
    if (t.kind !== 'ident') {
      continue;
    }
    const word = t.text.toLowerCase();
    const next = tokens[i + 1];
    if (LABEL_LIST_KEYWORDS.has(word)) {
      labelListPending = true;
      continue;
    }
    // A bare identifier is a metric name unless it is a keyword, a function call, an aggregation
    // followed by `by`/`without`, or already has a selector (handled by the `{` branch).
    const isAggregation = next?.kind === 'ident' && ['by', 'without'].includes(next.text.toLowerCase());
    if (!OTHER_KEYWORDS.has(word) && !isOp(next, '(') && !isOp(next, '{') && !isAggregation) {
      inserts.push({ at: t.end, text: `{${matchers}}` });
    }
  }
  return inserts.reduceRight((out, ins) => out.slice(0, ins.at) + ins.text + out.slice(ins.at), expr);
}

/** Escapes a value for a PromQL string literal delimited by `quote`. */
export function escapeLabelValue(value: string, quote: '"' | "'" = '"'): string {
  return value.replace(/\\/g, '\\\\').replaceAll(quote, `\\${quote}`);
}

/** Turns ad-hoc filters into PromQL matchers, dropping any that PromQL cannot express. */
export function adHocFiltersToMatchers(filters: AdHocVariableFilter[] = []): string {
  return filters
    .filter((f) => LABEL_NAME.test(f.key) && MATCH_OPS.has(f.operator))
    .map((f) => `${f.key}${f.operator}"${escapeLabelValue(f.value)}"`)
    .join(',');
}

/**
 * Template-variable formatter for PromQL, matching the Prometheus datasource: single values go in
 * as they are, multi-values become a regex alternation with each value regex-escaped.
 */
export function formatPromQLVariable(value: string | string[]): string {
  if (typeof value === 'string') {
    return value;
  }
  // Double backslash: one level for the regex, one for the PromQL string literal holding it.
  const escaped = value.map((v) => v.replace(/[\\^$*+?.()|[\]{}]/g, '\\\\$&'));
  return escaped.length === 1 ? escaped[0] : `(${escaped.join('|')})`;
}
