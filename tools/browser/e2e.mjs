// The dashboard's end-to-end test in a real browser: Playwright (core) driving Debian's
// chromium against a running agentpool server with a real worker. Started by the Rust test
// `dashboard_works_in_a_real_browser` (crates/agentpool/tests/it/dashboard.rs), which sets up
// the server, the worker, the scripted model endpoint and the tokens, and passes them in the
// environment:
//
//   E2E_URL               the server, e.g. http://127.0.0.1:40123
//   E2E_ADMIN_TOKEN       an admin token;  E2E_SUBMITTER_TOKEN  a submitter token
//   E2E_AGENTPOOL_BIN     the agentpool binary (tasks are submitted with its CLI)
//   E2E_REPO              a git repository the tasks run in
//   E2E_DIR               a scratch directory (gate files, pid files)
//   E2E_SCREENSHOTS       where to save a screenshot of each page (default target/screenshots)
//   E2E_CHROMIUM          the browser (default /usr/bin/chromium)
//
// Prints one `ok: …` line per check and exits non-zero on the first failure or if any page
// logged a console error.

import { chromium } from 'playwright-core';
import { CHROMIUM, SHOTS, assert, env, fail, finish, need, ok, watchErrors } from './checks.mjs';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BASE = need('E2E_URL');
const ADMIN = need('E2E_ADMIN_TOKEN');
const SUBMITTER = need('E2E_SUBMITTER_TOKEN');
const BIN = need('E2E_AGENTPOOL_BIN');
const REPO = need('E2E_REPO');
const DIR = need('E2E_DIR');
const WAIT = 30_000;
const AGENT_WAIT = 180_000;

// The task a step is waiting on: a failure prints what the server says of it, so a slow or
// stuck step can be told from a page that missed an update.
let underWatch = null;

/** Run the agentpool CLI against the server; returns trimmed stdout. */
function cli(token, ...args) {
  const r = spawnSync(BIN, ['--server', BASE, '--token', token, ...args], {
    encoding: 'utf8',
    env: { ...env, NO_COLOR: '1', AGENTPOOL_LOG: 'warn', AGENTPOOL_OUTPUT: 'human' },
  });
  if (r.status !== 0) throw new Error(`agentpool ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

/** Submit a command task with the CLI (submitter token); returns its id. */
function submitCommand(command, ...extra) {
  return cli(SUBMITTER, 'submit', '--repo', REPO, '--command', command, '--no-commit', ...extra);
}

/** A command that blocks until the gate file `name` exists. */
const gated = (name) => `until [ -f '${join(DIR, name)}' ]; do sleep 0.05; done`;
const open = (name) => writeFileSync(join(DIR, name), 'open\n');

async function waitFor(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Is process `pid` gone (or a zombie nobody reaped yet)? */
function gone(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

function watch(page) {
  watchErrors(page);
  page.on('dialog', (d) => d.accept());
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Mark the document; `sameDocument` later tells whether the page was reloaded meanwhile. */
async function mark(page) {
  await page.evaluate(() => { window.__e2e = 'same-document'; });
}
async function sameDocument(page) {
  return (await page.evaluate(() => window.__e2e)) === 'same-document';
}

async function login(page, token, next = '/') {
  await page.goto(`${BASE}/login?next=${encodeURIComponent(next)}`);
  await page.fill('#token', token);
  await Promise.all([page.waitForLoadState('load'), page.click('form[action="/login"] button[type="submit"]')]);
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const profile = mkdtempSync(join(tmpdir(), 'agentpool-e2e-profile-'));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 900 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    watch(page);
    page.setDefaultTimeout(WAIT);

    // --- a wrong token cannot log in ---------------------------------------------------
    await page.goto(`${BASE}/workers`);
    assert(page.url().includes('/login?next='), 'a page without a session redirects to the login');
    await page.fill('#token', 'apt_this-is-not-a-token');
    await page.click('form[action="/login"] button[type="submit"]');
    await page.waitForURL(/\/login\?error=invalid/);
    await page.locator('#login-error').waitFor();
    assert(!(await ctx.cookies()).some((c) => c.name === 'agentpool_session'), 'a wrong token gets no session cookie');
    await shot(page, 'login');

    // --- admin logs in -------------------------------------------------------------------
    await login(page, ADMIN, '/tasks');
    assert(new URL(page.url()).pathname === '/tasks', 'the admin token logs in and lands where it was going');
    const session = (await ctx.cookies()).find((c) => c.name === 'agentpool_session');
    assert(session && session.httpOnly && session.sameSite === 'Lax', 'the session cookie is HttpOnly and SameSite=Lax');

    // --- a task submitted with the CLI appears and goes queued → running → succeeded -----
    await mark(page);
    const gate = submitCommand(gated('gate1'));
    const task = submitCommand(gated('gate2'), '--depends-on', gate);
    const row = (state) => page.locator(`#task-${task}[data-state="${state}"]`);
    await row('queued').waitFor();
    ok('the submitted task appears in the list as queued without a reload');
    open('gate1');
    await row('running').waitFor();
    ok('its row turns running live');
    open('gate2');
    await row('succeeded').waitFor();
    ok('its row turns succeeded live');
    assert(await sameDocument(page), 'the list was never reloaded');
    await shot(page, 'tasks');

    // --- a real Claude Code run, rendered live on the task page --------------------------
    const gate3 = submitCommand(gated('gate3'));
    const agentTask = cli(SUBMITTER, 'submit', '--repo', REPO, '--agent', 'claude-code', '--model', 'claude-sonnet-4-5',
      '--max-attempts', '1', '--depends-on', gate3, '--prompt', 'Create claude.txt with a greeting <b>now</b>');
    await page.goto(`${BASE}/tasks/${agentTask}`);
    await mark(page);
    await page.locator('#task-state-badge[data-state="queued"]').waitFor();
    assert((await page.locator('#task-detail').innerText()).includes('waiting for dependencies'), 'a queued task says why it waits');
    assert((await page.locator('pre.prompt').innerText()).includes('<b>now</b>'), 'the prompt is shown as text, not markup');
    open('gate3');
    const call = page.locator('#events li[data-kind="tool_call"]').filter({ hasText: 'claude.txt' }).first();
    await call.waitFor({ timeout: AGENT_WAIT });
    assert((await call.locator('.tool').innerText()) === 'Bash', "the agent's tool call shows its tool");
    assert((await call.locator('.arg').innerText()).includes('echo hello from claude > claude.txt'), "…and its key argument (the command)");
    const said = page.locator('#events li[data-kind="assistant_message"]').filter({ hasText: 'I wrote claude.txt' }).first();
    await said.waitFor({ timeout: AGENT_WAIT });
    ok("the agent's assistant text is rendered live");
    await page.locator('#task-state-badge[data-state="succeeded"]').waitFor({ timeout: AGENT_WAIT });
    ok('the task page turns succeeded live');
    const result = page.locator('#events li[data-kind="tool_result"] details').first();
    assert(!(await result.evaluate((d) => d.open)), 'tool results start collapsed');
    await result.locator('summary').focus();
    await page.keyboard.press('Enter');
    assert(await result.evaluate((d) => d.open), 'a tool result opens from the keyboard');
    await page.locator('#result').filter({ hasText: 'claude.txt' }).waitFor();
    assert((await page.locator('#result .files').innerText()).includes('+1'), 'the result lists the changed file with its +/- lines');
    await page.locator('#usage').waitFor();
    ok('usage and cost are shown');
    assert(await sameDocument(page), 'the task page was never reloaded');
    await shot(page, 'task');

    // --- cancel a running task from its page; its process is gone ------------------------
    const pidFile = join(DIR, 'sleeper.pid');
    const sleeper = submitCommand(`sleep 600 & echo $! > '${pidFile}'; wait`);
    await page.goto(`${BASE}/tasks/${sleeper}`);
    await page.locator('#task-state-badge[data-state="running"]').waitFor();
    const pid = Number(await waitFor('the pid file', () => existsSync(pidFile) && readFileSync(pidFile, 'utf8').trim()));
    assert(!gone(pid), 'the task runs its process');
    underWatch = sleeper;
    await page.fill('input[name="reason"]', 'stopped from the browser');
    const askedAt = Date.now();
    await Promise.all([page.waitForLoadState('load'), page.click('button:has-text("Cancel task")')]);
    // The worker hears of the cancel within a beat, stops the process group and reports; on
    // a loaded machine that takes as long as an agent step can.
    await page.locator('#task-state-badge[data-state="canceled"]').waitFor({ timeout: AGENT_WAIT });
    underWatch = null;
    ok(`the task turns canceled (${Date.now() - askedAt} ms after the click)`);
    await waitFor('the canceled process to end', () => gone(pid), 10_000);
    ok("the canceled task's process is gone");
    await page.goto(`${BASE}/tasks/${sleeper}`);
    const why = await page.locator('p.error').innerText();
    assert(why.endsWith(': stopped from the browser'), `the task keeps the reason given with the cancel (${why})`);
    ok('the task says why it was canceled');

    // --- the overview and the projects page ----------------------------------------------
    await page.goto(`${BASE}/`);
    const succeeded = Number(await page.locator('#count-succeeded .n').innerText());
    assert(succeeded >= 4, `the overview counts the succeeded tasks (${succeeded})`);
    assert(await page.locator('svg.chart').count() === 1, 'the overview draws the last hour');
    assert((await page.locator('#throughput').innerText()).includes('succeeded'), 'the chart has a text summary');
    await shot(page, 'overview');
    // A schedule, run now and paused from the projects page.
    cli(SUBMITTER, 'schedules', 'put', 'nightly', '--cron', '@daily', '--repo', REPO,
      '--command', 'echo scheduled', '--no-commit');
    await page.goto(`${BASE}/projects`);
    const schedule = page.locator('table.schedules tbody tr').filter({ hasText: 'nightly' });
    assert(await schedule.count() === 1, 'the projects page lists the schedule');
    await Promise.all([page.waitForURL(/\/tasks\/[0-9a-f-]+$/), schedule.locator('button:has-text("Run now")').click()]);
    await page.locator('.events', { hasText: 'submitted by schedule nightly' }).waitFor({ timeout: WAIT });
    ok('"Run now" submits the schedule\'s task and shows it');
    await page.goto(`${BASE}/projects`);
    await Promise.all([page.waitForLoadState('load'), schedule.locator('button:has-text("Pause")').click()]);
    assert(await schedule.locator('button:has-text("Resume")').count() === 1, 'a paused schedule offers Resume');
    assert((await schedule.innerText()).includes('paused'), 'the schedule says it is paused');
    await shot(page, 'projects');
    await page.goto(`${BASE}/workers`);
    assert(await page.locator('button:has-text("Drain")').count() >= 1, 'an admin sees the drain action');

    // --- a submitter sees no admin actions -----------------------------------------------
    await ctx.clearCookies();
    await login(page, SUBMITTER, '/workers');
    assert(new URL(page.url()).pathname === '/workers', 'the submitter token logs in');
    assert(await page.locator('tbody tr').count() >= 1, 'the submitter sees the workers');
    assert(await page.locator('button:has-text("Drain")').count() === 0, 'a submitter sees no drain action');
    await shot(page, 'workers-submitter');
    await page.goto(`${BASE}/tasks`);
    assert(await page.locator('input[name="id"]').count() === 0, 'a submitter sees no bulk selection');
    assert(await page.locator('button:has-text("Cancel selected")').count() === 0, 'a submitter sees no bulk actions');
    await page.goto(`${BASE}/projects`);
    assert((await page.locator('main').innerText()).includes('shown to admins'), 'a submitter sees no credential names');

    // --- an admin drains a worker --------------------------------------------------------
    await ctx.clearCookies();
    await login(page, ADMIN, '/workers');
    const worker = page.locator('tbody tr').filter({ has: page.locator('button:has-text("Drain")') }).first();
    const workerId = (await worker.getAttribute('id')).replace(/^worker-/, '');
    await Promise.all([page.waitForLoadState('load'), worker.locator('button:has-text("Drain")').click()]);
    await page.locator(`#worker-${workerId}[data-status="draining"], #worker-${workerId}[data-status="offline"]`).waitFor();
    ok(`worker ${workerId} drains`);
    assert(await page.locator(`#worker-${workerId} button:has-text("Drain")`).count() === 0, 'a draining worker offers no drain');
    await shot(page, 'workers');

    // --- log out -------------------------------------------------------------------------
    await Promise.all([page.waitForLoadState('load'), page.click('button:has-text("Log out")')]);
    assert(new URL(page.url()).pathname === '/login', 'logging out returns to the login');
    await page.goto(`${BASE}/`);
    assert(page.url().includes('/login'), 'after logging out the pages need a login again');
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
  finish('e2e');
}

main().catch((e) => fail(e, () => {
  if (underWatch) {
    const r = spawnSync(BIN, ['--server', BASE, '--token', ADMIN, 'tasks', 'logs', underWatch], {
      encoding: 'utf8',
      env: { ...env, NO_COLOR: '1', AGENTPOOL_OUTPUT: 'human' },
    });
    console.log(`the server's events of task ${underWatch}:\n${r.stdout}${r.stderr}`);
  }
}));
