import { autocompletion, closeBrackets, closeBracketsKeymap, completionKeymap } from '@codemirror/autocomplete';
import { defaultKeymap, history, historyKeymap } from '@codemirror/commands';
import { HighlightStyle, syntaxHighlighting } from '@codemirror/language';
import { EditorState } from '@codemirror/state';
import { EditorView, keymap, placeholder as placeholderText } from '@codemirror/view';
import { css } from '@emotion/css';
import { GrafanaTheme2 } from '@grafana/data';
import { useStyles2, useTheme2 } from '@grafana/ui';
import { tags } from '@lezer/highlight';
import { PromQLExtension } from '@prometheus-io/codemirror-promql';
import React, { useEffect, useRef } from 'react';

import { MetadataSource, DatasourcePromClient } from '../promqlClient';

interface Props {
  source: MetadataSource;
  value: string;
  placeholder: string;
  onChange: (value: string) => void;
  /** Shift+Enter and leaving the field run the query. */
  onRunQuery: () => void;
}

/**
 * The PromQL code field: Prometheus' own grammar (@prometheus-io/codemirror-promql, the editor of Prometheus' web
 * UI) for highlighting, linting and completion of functions, keywords, metrics, labels and values, the last three
 * read from the datasource.
 */
export function PromQLField({ source, value, placeholder, onChange, onRunQuery }: Props) {
  const styles = useStyles2(getStyles);
  const theme = useTheme2();
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView>();
  // The editor is built once; these refs give its callbacks the latest props.
  const latest = useRef({ onChange, onRunQuery });
  useEffect(() => {
    latest.current = { onChange, onRunQuery };
  }, [onChange, onRunQuery]);

  useEffect(() => {
    const promql = new PromQLExtension().setComplete({ remote: new DatasourcePromClient(source) });
    const highlight = HighlightStyle.define([
      { tag: tags.keyword, color: theme.colors.primary.text },
      { tag: tags.function(tags.variableName), color: theme.colors.primary.text },
      { tag: [tags.string, tags.labelName], color: theme.visualization.getColorByName('green') },
      { tag: tags.number, color: theme.visualization.getColorByName('orange') },
      { tag: tags.comment, color: theme.colors.text.secondary, fontStyle: 'italic' },
      { tag: tags.invalid, color: theme.colors.error.text },
    ]);
    const v = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: value,
        extensions: [
          history(),
          closeBrackets(),
          autocompletion(),
          keymap.of([
            // Shift+Enter runs the query, as in Grafana's own query editors.
            { key: 'Shift-Enter', run: () => (latest.current.onRunQuery(), true) },
            ...closeBracketsKeymap,
            ...completionKeymap,
            ...historyKeymap,
            ...defaultKeymap,
          ]),
          promql.asExtension(),
          syntaxHighlighting(highlight),
          placeholderText(placeholder),
          EditorView.lineWrapping,
          EditorView.contentAttributes.of({ 'aria-label': 'PromQL expression' }),
          EditorView.updateListener.of((u) => {
            if (u.docChanged) {
              latest.current.onChange(u.state.doc.toString());
            }
          }),
          EditorView.domEventHandlers({ blur: () => latest.current.onRunQuery() }),
        ],
      }),
    });
    view.current = v;
    return () => {
      v.destroy();
      promql.destroy();
    };
    // Built once per datasource: the doc follows `value` below, the callbacks follow through `latest`.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [source]);

  // A change from outside (a query picked from history, a link) replaces the text.
  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== value) {
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: value } });
    }
  }, [value]);

  return <div ref={host} className={styles.field} data-testid="promql-field" />;
}

const getStyles = (theme: GrafanaTheme2) => ({
  field: css({
    width: '100%',
    marginBottom: theme.spacing(0.5),
    border: `1px solid ${theme.components.input.borderColor}`,
    borderRadius: theme.shape.radius.default,
    background: theme.components.input.background,
    fontFamily: theme.typography.fontFamilyMonospace,
    fontSize: theme.typography.bodySmall.fontSize,
    '.cm-editor': { minHeight: theme.spacing(4), background: 'transparent' },
    '.cm-editor.cm-focused': { outline: `2px solid ${theme.colors.primary.main}` },
    '.cm-content': { padding: theme.spacing(0.75, 1), caretColor: theme.colors.text.primary, fontFamily: 'inherit' },
    '.cm-placeholder': { color: theme.colors.text.disabled },
    '.cm-tooltip': {
      background: theme.colors.background.secondary,
      border: `1px solid ${theme.colors.border.weak}`,
      color: theme.colors.text.primary,
      zIndex: theme.zIndex.dropdown,
    },
    '.cm-tooltip-autocomplete ul li[aria-selected]': { background: theme.colors.action.selected, color: 'inherit' },
  }),
});
