/**
 * Ends the jest run with one plain "jest: N passed, N failed" line, a summary that CI log readers
 * recognise in any language (jest's own "Tests:" line is not one of those).
 */
class SummaryReporter {
  onRunComplete(_contexts, results) {
    const skipped = results.numPendingTests + results.numTodoTests;
    const line = `jest: ${results.numPassedTests} passed, ${results.numFailedTests} failed${skipped ? `, ${skipped} skipped` : ''}\n`;
    // Deferred so it lands after jest's own summary, which is printed by a reporter that runs after this one.
    setImmediate(() => process.stderr.write(line));
  }
}

module.exports = SummaryReporter;
