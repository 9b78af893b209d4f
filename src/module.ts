import { DataSourcePlugin } from '@grafana/data';

import { ConfigEditor } from './components/ConfigEditor';
import { QueryEditor } from './components/QueryEditor';
import { DataSource } from './datasource';
import { SpangraphOptions, SpangraphQuery } from './types';

export const plugin = new DataSourcePlugin<DataSource, SpangraphQuery, SpangraphOptions>(DataSource)
  .setConfigEditor(ConfigEditor)
  .setQueryEditor(QueryEditor);
