import { css } from '@emotion/css';
import { GrafanaTheme2 } from '@grafana/data';
import {
  InlineField,
  InlineFieldRow,
  InlineSwitch,
  Input,
  Menu,
  RadioButtonGroup,
  TextArea,
  useStyles2,
} from '@grafana/ui';
import React, { ChangeEvent, KeyboardEvent, useEffect, useRef } from 'react';

import { CompletionItem } from '../completion';
import { SpangraphQuery } from '../types';
import { SubEditorProps } from './editorProps';
import { useCompletions } from './hooks';

type QueryKind = 'range' | 'instant' | 'both';

const KIND_OPTIONS: Array<{ value: QueryKind; label: string }> = [
  { value: 'range', label: 'Range' },
  { value: 'instant', label: 'Instant' },
  { value: 'both', label: 'Both' },
];

const FORMAT_OPTIONS: Array<{ value: NonNullable<SpangraphQuery['format']>; label: string }> = [
  { value: 'time_series', label: 'Time series' },
  { value: 'table', label: 'Table' },
  { value: 'heatmap', label: 'Heatmap' },
];

/**
 * A TextArea with a suggestion menu rather than Monaco: Monaco cannot run in jsdom, and the
 * completion logic it would host lives in ../completion.ts where it is unit-tested.
 */
export function PromQLEditor({ datasource, query, onChange, onRunQuery }: SubEditorProps) {
  const styles = useStyles2(getStyles);
  const textarea = useRef<HTMLTextAreaElement>(null);
  const menu = useRef<HTMLDivElement>(null);
  const { completions, active, setActive, suggest, close: closeSuggestions } = useCompletions(datasource);
  const caretAfterAccept = useRef<number>();
  const expr = query.expr ?? '';

  const accept = (item: CompletionItem) => {
    if (!completions) {
      return;
    }
    caretAfterAccept.current = completions.from + item.insertText.length;
    onChange({ ...query, expr: expr.slice(0, completions.from) + item.insertText + expr.slice(completions.to) });
    closeSuggestions();
  };

  useEffect(() => {
    if (caretAfterAccept.current !== undefined) {
      textarea.current?.setSelectionRange(caretAfterAccept.current, caretAfterAccept.current);
      caretAfterAccept.current = undefined;
    }
  }, [expr]);

  useEffect(() => {
    // jsdom has no scrollIntoView, hence the optional call.
    menu.current?.querySelectorAll('[role="menuitem"]')[active]?.scrollIntoView?.({ block: 'nearest' });
  }, [active]);

  const onExprChange = (e: ChangeEvent<HTMLTextAreaElement>) => {
    onChange({ ...query, expr: e.currentTarget.value });
    suggest(e.currentTarget.value, e.currentTarget.selectionStart);
  };

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && e.shiftKey) {
      e.preventDefault();
      closeSuggestions();
      onRunQuery();
    } else if (e.key === ' ' && e.ctrlKey) {
      e.preventDefault();
      suggest(expr, e.currentTarget.selectionStart);
    } else if (completions) {
      const count = completions.items.length;
      const handled: Record<string, () => void> = {
        ArrowDown: () => setActive((active + 1) % count),
        ArrowUp: () => setActive((active - 1 + count) % count),
        Enter: () => accept(completions.items[active]),
        Tab: () => accept(completions.items[active]),
        Escape: closeSuggestions,
      };
      if (handled[e.key]) {
        e.preventDefault();
        handled[e.key]();
      }
    }
  };

  const onBlur = () => {
    closeSuggestions();
    onRunQuery();
  };

  const kind: QueryKind = query.range && query.instant ? 'both' : query.instant ? 'instant' : 'range';

  return (
    <>
      <div className={styles.editor}>
        <TextArea
          ref={textarea}
          aria-label="PromQL expression"
          className={styles.code}
          rows={3}
          spellCheck={false}
          placeholder="PromQL, e.g. sum by (service_name) (rate(traces_spanmetrics_calls_total[$__rate_interval])) — Shift+Enter runs, Ctrl+Space suggests"
          value={expr}
          onChange={onExprChange}
          onKeyDown={onKeyDown}
          onBlur={onBlur}
        />
        {completions && (
          // preventDefault keeps focus in the textarea, so clicking a suggestion does not blur (and run) first.
          <div ref={menu} className={styles.suggestions} onMouseDown={(e) => e.preventDefault()}>
            {/* Menu focuses its first item on open; -1 keeps the caret in the textarea while typing. */}
            <Menu ariaLabel="PromQL suggestions" onOpen={(focusOnItem) => focusOnItem(-1)}>
              {completions.items.map((item, i) => (
                <Menu.Item key={item.label} label={item.label} active={i === active} onClick={() => accept(item)} />
              ))}
            </Menu>
          </div>
        )}
      </div>
      <InlineFieldRow>
        <InlineField label="Legend" tooltip="Series name override, e.g. {{service_name}}" labelWidth={10}>
          <Input
            aria-label="Legend format"
            width={24}
            placeholder="auto"
            value={query.legendFormat ?? ''}
            onChange={(e) => onChange({ ...query, legendFormat: e.currentTarget.value })}
            onBlur={onRunQuery}
          />
        </InlineField>
        <InlineField label="Type">
          <RadioButtonGroup
            options={KIND_OPTIONS}
            value={kind}
            onChange={(k) => {
              onChange({ ...query, range: k !== 'instant', instant: k !== 'range' });
              onRunQuery();
            }}
          />
        </InlineField>
        <InlineField label="Format">
          <RadioButtonGroup
            options={FORMAT_OPTIONS}
            value={query.format ?? 'time_series'}
            onChange={(format) => {
              onChange({ ...query, format });
              onRunQuery();
            }}
          />
        </InlineField>
        <InlineField label="Min step" tooltip="Lower bound for the step, e.g. 30s; empty lets Grafana choose">
          <Input
            aria-label="Min step"
            width={10}
            placeholder="auto"
            value={query.interval ?? ''}
            onChange={(e) => onChange({ ...query, interval: e.currentTarget.value })}
            onBlur={onRunQuery}
          />
        </InlineField>
        <InlineField label="Exemplars">
          <InlineSwitch
            aria-label="Exemplars"
            value={!!query.exemplar}
            onChange={(e) => {
              onChange({ ...query, exemplar: e.currentTarget.checked });
              onRunQuery();
            }}
          />
        </InlineField>
      </InlineFieldRow>
    </>
  );
}

const getStyles = (theme: GrafanaTheme2) => ({
  editor: css({ position: 'relative', width: '100%', marginBottom: theme.spacing(0.5) }),
  code: css({ fontFamily: theme.typography.fontFamilyMonospace }),
  suggestions: css({
    position: 'absolute',
    top: '100%',
    left: 0,
    zIndex: theme.zIndex.dropdown,
    maxHeight: 320,
    overflowY: 'auto',
  }),
});
