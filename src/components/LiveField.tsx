import { CoreApp } from '@grafana/data';
import { InlineField, InlineSwitch } from '@grafana/ui';
import React from 'react';

import { SubEditorProps } from './editorProps';

/**
 * The "Live" toggle shared by the service graph and RED table editors. Explore has no place for it: it runs a query
 * when asked and never subscribes to a panel's stream, so the switch would do nothing there.
 */
export function LiveField({ query, onChange, onRunQuery, app }: Omit<SubEditorProps, 'datasource'>) {
  if (app === CoreApp.Explore) {
    return null;
  }
  return (
    <InlineField label="Live" tooltip="Refresh every collection interval without re-running the panel">
      <InlineSwitch
        aria-label="Live"
        value={!!query.live}
        onChange={(e) => {
          onChange({ ...query, live: e.currentTarget.checked });
          // Re-run so the panel switches between the one-off query and the stream straight away.
          onRunQuery();
        }}
      />
    </InlineField>
  );
}
