/**
 * The scaffolded webpack configuration (.config/webpack), extended as @grafana/create-plugin documents: the
 * provisioned dashboards are also the plugin's own (plugin.json "includes"), so they are copied into dist/dashboards.
 */
import CopyWebpackPlugin from 'copy-webpack-plugin';
import type { Configuration } from 'webpack';
import { merge } from 'webpack-merge';

import grafanaConfig, { type Env } from './.config/webpack/webpack.config';

const config = async (env: Env): Promise<Configuration> =>
  merge(await grafanaConfig(env), {
    plugins: [
      new CopyWebpackPlugin({
        patterns: [{ from: '../provisioning/dashboards/*.json', to: 'dashboards/[name][ext]' }],
      }),
    ],
  });

export default config;
