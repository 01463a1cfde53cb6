// What the dashboard's browser scripts (e2e.mjs, layout.mjs) share: reading their settings from
// the environment, counting checks, collecting what pages log as errors, and ending the run with
// one line the Rust test looks for ("checks passed") or a non-zero exit.

export const env = process.env;

/** A setting the Rust test must pass in. */
export function need(k) {
  if (!env[k]) throw new Error(`${k} is not set`);
  return env[k];
}

export const SHOTS = env.E2E_SCREENSHOTS || 'target/screenshots';
export const CHROMIUM = env.E2E_CHROMIUM || '/usr/bin/chromium';

/** What pages logged as errors; any makes the run fail at its end. */
export const problems = [];
let checks = 0;

export function ok(what) {
  checks += 1;
  console.log(`ok: ${what}`);
}

export function assert(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  ok(what);
}

/**
 * Collect the page's console errors and uncaught exceptions. `ignore(text)` passes over console
 * errors a script expects (an error page is answered with its status, which the browser logs).
 */
export function watchErrors(page, ignore = () => false) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !ignore(m.text())) {
      problems.push(`${page.url()}: console error: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`${page.url()}: page error: ${e.message}`));
}

/** The end of a run that got through every step: fails on collected problems, else passes. */
export function finish(name) {
  if (problems.length) {
    for (const p of problems) console.log(`problem: ${p}`);
    throw new Error(`${problems.length} console problem(s)`);
  }
  ok('no page logged a console error');
  console.log(`${name}: ${checks} checks passed`);
}

/** The end of a run that threw: says what went wrong (and `more()`, if given), exits 1. */
export function fail(e, more = () => {}) {
  for (const p of problems) console.log(`problem: ${p}`);
  console.log(`FAILED: ${e.stack || e}`);
  more();
  process.exit(1);
}
