export const SOURCE_DIR = 'src';
export const DIST_DIR = 'dist';
// Spangraph keeps plugin.json at the repository root (shared with the Go build), not in src/.
export const PLUGIN_JSON = 'plugin.json';
