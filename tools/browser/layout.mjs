// The dashboard's layout and accessibility in a real browser: Playwright (core) driving Debian's
// chromium against a running agentpool server whose tasks, workers and projects hold very long
// and hostile values. Started by the Rust test `the_dashboard_holds_long_values_and_reads_well`
// (crates/agentpool-server/tests/it/dashboard/browser.rs), which sets up the server and its data
// and passes them in the environment:
//
//   E2E_URL            the server, e.g. http://127.0.0.1:40123
//   E2E_ADMIN_TOKEN    an admin token
//   E2E_PAGES          the pages to look at, comma-separated paths
//   E2E_QUEUED_TASK    a queued task, canceled through the API while its page is open
//   E2E_BIDI_TASK      a task whose command holds Unicode direction controls
//   E2E_SCREENSHOTS    where to save a screenshot of each page (default target/screenshots)
//   E2E_CHROMIUM       the browser (default /usr/bin/chromium)
//
// Prints one `ok: …` line per check and exits non-zero on the first failure or if any page
// logged a console error.

import { chromium } from 'playwright-core';
import { CHROMIUM, SHOTS, assert, fail, finish, need, ok, watchErrors } from './checks.mjs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const BASE = need('E2E_URL');
const ADMIN = need('E2E_ADMIN_TOKEN');
const PAGES = need('E2E_PAGES').split(',');
const QUEUED = need('E2E_QUEUED_TASK');
const BIDI = need('E2E_BIDI_TASK');
const WAIT = 30_000;

function watch(page) {
  // An error page is answered with its status; the browser logs that as a failed load.
  watchErrors(page, (text) => text.startsWith('Failed to load resource'));
}

/** How far the page is wider than the window (0: it fits). */
async function overflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

/**
 * Controls whose border stands out less than 3:1 from what is behind it or from the control's
 * own background (WCAG 1.4.11), as `tag: ratio` strings.
 */
async function faintControls(page) {
  return page.evaluate(() => {
    const parse = (c) => {
      const m = c.match(/^rgba?\(([^)]*)\)$/);
      if (!m) return null;
      const p = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return { rgb: p.slice(0, 3), a: p.length > 3 ? p[3] : 1 };
    };
    const lum = ([r, g, b]) => {
      const f = (c) => {
        c /= 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const ratio = (x, y) => {
      const [a, b] = [lum(x), lum(y)].sort((p, q) => q - p);
      return (a + 0.05) / (b + 0.05);
    };
    const behind = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = parse(getComputedStyle(e).backgroundColor);
        if (c && c.a === 1) return c.rgb;
      }
      return [255, 255, 255];
    };
    const out = [];
    const controls = document.querySelectorAll(
      'input:not([type="hidden"]):not([type="checkbox"]), select, textarea, button',
    );
    for (const el of controls) {
      if (!el.getClientRects().length) continue;
      const s = getComputedStyle(el);
      if (s.borderTopStyle === 'none' || parseFloat(s.borderTopWidth) === 0) continue;
      const border = parse(s.borderTopColor);
      if (!border) continue;
      const own = parse(s.backgroundColor);
      const around = [behind(el.parentElement)];
      if (own && own.a === 1) around.push(own.rgb);
      const worst = Math.min(...around.map((bg) => ratio(border.rgb, bg)));
      if (worst < 3) out.push(`${el.tagName.toLowerCase()} "${el.textContent.trim() || el.name}": ${worst.toFixed(2)}`);
    }
    return out;
  });
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await ctx.newPage();
    watch(page);
    page.setDefaultTimeout(WAIT);

    // --- log in; then no page is wider than the window, in light and dark ---------------
    await page.goto(`${BASE}/login`);
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      const faint = await faintControls(page);
      assert(faint.length === 0, `the login form's controls stand out 3:1 (${scheme})${faint.map((f) => `; not ${f}`).join('')}`);
    }
    await page.fill('#token', ADMIN);
    await Promise.all([page.waitForLoadState('load'), page.click('form[action="/login"] button[type="submit"]')]);
    assert(new URL(page.url()).pathname === '/', 'the admin logs in');
    for (const width of [1280, 1024]) {
      await page.setViewportSize({ width, height: 900 });
      for (const path of PAGES) {
        await page.goto(`${BASE}${path}`);
        const wider = await overflow(page);
        assert(wider <= 0, `${path} fits a ${width} px window (${wider} px too wide)`);
      }
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    for (const scheme of ['light', 'dark']) {
      await page.emulateMedia({ colorScheme: scheme });
      for (const [i, path] of PAGES.entries()) {
        await page.goto(`${BASE}${path}`);
        const faint = await faintControls(page);
        assert(faint.length === 0, `${path}: every control's border stands out 3:1 (${scheme})${faint.map((f) => `; not ${f}`).join('')}`);
        // Named by place and kind (ids change with every run).
        const name = path.split('/').filter(Boolean).map((p) => (/^[0-9a-f-]{36}$/.test(p) ? 'task' : p)).join('-');
        await page.screenshot({ path: join(SHOTS, `layout-${i}-${name || 'overview'}-${scheme}.png`), fullPage: true });
      }
    }
    await page.emulateMedia({ colorScheme: 'light' });

    // --- direction controls are shown, not obeyed ----------------------------------------
    await page.goto(`${BASE}/tasks/${BIDI}`);
    const command = await page.locator('pre.prompt').innerText();
    assert(command.includes('<U+202E>') && !/[\u202a-\u202e\u2066-\u2069\u200e\u200f]/.test(command),
      `the command shows its direction controls (${command.slice(0, 60)})`);

    // --- a task's state is announced where it changes ------------------------------------
    await page.goto(`${BASE}/tasks/${QUEUED}`);
    await page.locator('#task-state-badge[data-state="queued"]').waitFor();
    await page.waitForFunction(() => document.querySelector('.live-status')?.textContent === 'Live');
    await page.evaluate(() => { window.__region = document.getElementById('task-state'); });
    const canceled = await fetch(`${BASE}/v1/tasks/${QUEUED}/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'from the layout test' }),
    });
    assert(canceled.ok, `the task is canceled through the API (${canceled.status})`);
    await page.locator('#task-state-badge[data-state="canceled"]').waitFor();
    const region = await page.evaluate(() => {
      const r = document.getElementById('task-state');
      return { same: r === window.__region, live: r.getAttribute('aria-live'), text: r.textContent };
    });
    assert(region.same && region.live === 'polite' && region.text.includes('canceled'),
      `the new state is written into the polite live region (${JSON.stringify(region)})`);

    // --- revoking a token asks first -----------------------------------------------------
    await page.goto(`${BASE}/projects`);
    const revoke = page.locator('table.tokens button:has-text("Revoke")').first();
    const before = await page.locator('table.tokens button:has-text("Revoke")').count();
    let asked = null;
    page.once('dialog', (d) => {
      asked = d.message();
      d.dismiss();
    });
    await revoke.click();
    await page.waitForTimeout(300);
    assert(asked && asked.startsWith('Revoke token '), `Revoke asks first (${asked})`);
    await page.reload();
    const after = await page.locator('table.tokens button:has-text("Revoke")').count();
    assert(after === before, 'a dismissed confirmation revokes nothing');

    // --- a link from another site lands on the page, not on the login --------------------
    await page.route('http://chat.example/**', (r) =>
      r.fulfill({ contentType: 'text/html', body: `<a id="go" href="${BASE}/tasks/${BIDI}">the task</a>` }));
    await page.goto('http://chat.example/');
    await Promise.all([page.waitForLoadState('load'), page.click('#go')]);
    assert(new URL(page.url()).pathname === `/tasks/${BIDI}`,
      `a link followed from another site shows the task (${page.url()})`);
  } finally {
    await browser.close();
  }
  finish('layout');
}

main().catch((e) => fail(e));
