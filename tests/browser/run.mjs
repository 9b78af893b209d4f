/**
 * Browser test: bundles tests/browser/harness.tsx, serves it, and drives it in Debian's Chromium
 * against the Spangraph backend's Prometheus-compatible API at $SPANGRAPH_URL.
 *
 *   SPANGRAPH_URL=http://127.0.0.1:9097 npm run test:browser
 *
 * Screenshots go to tests/browser/artifacts/.
 */
import { build } from 'esbuild';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const buildDir = join(here, '.build');
const artifacts = join(here, 'artifacts');
const api = process.env.SPANGRAPH_URL;
const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

if (!api) {
  console.error('SPANGRAPH_URL is not set (e.g. http://127.0.0.1:9097)');
  process.exit(2);
}

await rm(buildDir, { recursive: true, force: true });
await mkdir(artifacts, { recursive: true });
await build({
  entryPoints: [join(here, 'harness.tsx')],
  outfile: join(buildDir, 'harness.js'),
  bundle: true,
  format: 'iife',
  platform: 'browser',
  target: 'chrome120',
  define: { 'process.env.NODE_ENV': '"production"' },
  // @grafana/ui pulls in Monaco and icon assets; the editors under test do not use them, but they must bundle.
  loader: Object.fromEntries(['.svg', '.ttf', '.woff', '.woff2', '.png', '.gif'].map((ext) => [ext, 'file'])),
  logLevel: 'warning',
});
await writeFile(
  join(buildDir, 'index.html'),
  '<!doctype html><html><head><meta charset="utf-8"><title>Spangraph editors</title>' +
    // @grafana/runtime's config reads the boot data Grafana's index page would have set.
    '<script>window.grafanaBootData = { settings: {}, user: {}, navTree: [] };</script></head>' +
    '<body><div id="root"></div><script src="harness.js"></script></body></html>'
);

const server = createServer(async (req, res) => {
  const file = new URL(req.url, 'http://x').pathname.replace(/^\/+/, '') || 'index.html';
  try {
    const body = await readFile(join(buildDir, file.replace(/\.\./g, '')));
    res.writeHead(200, {
      'content-type': file.endsWith('.html')
        ? 'text/html'
        : file.endsWith('.js')
          ? 'text/javascript'
          : 'application/octet-stream',
    });
    res.end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/index.html?api=${encodeURIComponent(api)}`;

const userDataDir = await mkdtemp(join(tmpdir(), 'spangraph-chromium-'));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: chromiumPath,
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    // The harness page and the backend are different origins; inside Grafana resource calls are
    // same-origin (proxied by Grafana), so CORS is not something this test should trip over.
    '--disable-web-security',
  ],
});

const page = context.pages()[0] ?? (await context.newPage());
const pageErrors = [];
page.on('pageerror', (err) => pageErrors.push(err.message));

const results = [];
async function check(name, fn) {
  try {
    await fn();
    results.push(true);
    console.log(`ok   ${name}`);
  } catch (err) {
    results.push(false);
    await page.screenshot({ path: join(artifacts, `failed-${results.length}.png`), fullPage: true }).catch(() => {});
    console.log(`FAIL ${name}\n     ${String(err.message ?? err).split('\n')[0]}`);
  }
}

try {
  await page.goto(pageUrl);
  const queryEditor = page.getByTestId('query-editor');
  const editor = queryEditor.getByRole('textbox', { name: 'PromQL expression' });
  // CodeMirror's completion list.
  const suggestions = page.getByRole('listbox');

  await check('editors render', async () => {
    await editor.waitFor({ timeout: 15000 });
    await page.getByText('Traces data source').waitFor();
    await page.screenshot({ path: join(artifacts, '01-editors.png'), fullPage: true });
  });

  await check('metric name completion lists traces_spanmetrics_calls_total', async () => {
    await editor.click();
    await editor.pressSequentially('rate(traces_span');
    await suggestions.getByRole('option', { name: /traces_spanmetrics_calls_total/ }).waitFor({ timeout: 10000 });
    await page.screenshot({ path: join(artifacts, '02-metric-completion.png') });
    await editor.press('Enter');
    const value = await editor.textContent();
    if (!value.startsWith('rate(traces_spanmetrics_')) {
      throw new Error(`accepting the suggestion left ${JSON.stringify(value)}`);
    }
    await editor.press('ControlOrMeta+a');
    await editor.press('Backspace');
  });

  await check('label name completion inside a selector offers service', async () => {
    await editor.pressSequentially('traces_spanmetrics_calls_total{');
    await editor.press('Control+Space');
    await suggestions
      .getByRole('option', { name: /^service/ })
      .first()
      .waitFor({ timeout: 10000 });
    await page.screenshot({ path: join(artifacts, '03-label-completion.png') });
    await editor.press('Escape');
  });

  await check('an alert rule query offers only Range or Instant, no format or exemplars', async () => {
    const alert = page.getByTestId('alert-editor');
    await alert.getByLabel('Instant').check({ force: true });
    for (const gone of ['Both', 'Table', 'Heatmap', 'Exemplars']) {
      if (await alert.getByLabel(gone, { exact: true }).count()) {
        throw new Error(`the alert rule editor offers ${gone}`);
      }
    }
    const state = JSON.parse(await page.getByTestId('state').textContent());
    if (!state.alertQuery.instant || state.alertQuery.range || state.alertQuery.exemplar) {
      throw new Error(`alert query ${JSON.stringify(state.alertQuery)}`);
    }
  });

  await check('an Explore instant query shows a table with a Value column', async () => {
    const explore = page.getByTestId('explore-editor');
    if (await explore.getByLabel('Live', { exact: true }).count()) {
      throw new Error('Explore offers a Live switch');
    }
    const field = explore.getByRole('textbox', { name: 'PromQL expression' });
    await field.click();
    await field.pressSequentially('sum by (service) (traces_spanmetrics_calls_total)');
    await field.press('Shift+Enter');
    const table = explore.getByTestId('explore-table');
    await table.locator('tbody tr').first().waitFor({ timeout: 10000 });
    const header = await table.locator('th').allTextContents();
    if (header.join(',') !== 'Time,service,Value') {
      throw new Error(`table columns ${header.join(',')}`);
    }
    await page.screenshot({ path: join(artifacts, '05-explore-table.png'), fullPage: true });
  });

  await check('service graph editor lists services', async () => {
    await queryEditor.getByLabel('Service graph').check({ force: true });
    await page.getByRole('combobox', { name: 'Service' }).click();
    await page.getByRole('option').first().waitFor({ timeout: 10000 });
    await page.screenshot({ path: join(artifacts, '04-service-graph.png') });
    await page.keyboard.press('Escape');
  });

  await check('no uncaught page errors', async () => {
    if (pageErrors.length) {
      throw new Error(pageErrors.join('; '));
    }
  });
} finally {
  await context.close();
  server.close();
  await rm(userDataDir, { recursive: true, force: true });
}

const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`browser: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
