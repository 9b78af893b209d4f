// force timezone to UTC to allow tests to work regardless of local timezone
// generally used by snapshots, but can affect specific tests
process.env.TZ = 'UTC';
// i18next (pulled in by @grafana/ui) otherwise prints a sponsor notice in every test file.
process.env.I18NEXT_NO_SUPPORT_NOTICE = 'true';

const base = require('./.config/jest.config');
const swc = base.transform['^.+\\.(t|j)sx?$'];

module.exports = {
  // Jest configuration provided by Grafana scaffolding
  ...base,
  transform: {
    ...base.transform,
    // d3-color and friends ship ESM-only .mjs files, which the scaffold's transform does not match.
    '^.+\\.mjs$': swc,
  },
  reporters: ['default', '<rootDir>/tests/jest-summary-reporter.js'],
};
