#!/usr/bin/env node
// Loads the Sluice dashboard in headless Chromium and reports what it shows.
//
//   node tests/browser/dashboard.mjs <url> <screenshot.png>
//
// Prints ONE JSON line on stdout:
//   {"console_errors": [...], "modules": [{"name", "status", "lag_status",
//    "events_in", "applied", "emitted", "dead_letters", "dead_letter_depth",
//    "retries", "lag"}], "title": "...", "refreshes": n, "error": null | "..."}
// read from the page's data attributes (<tr data-module>, [data-field][data-value]).
// console_errors holds console messages of type error/warning, uncaught page
// errors and failed requests. Exit 0 when the page loaded (whatever it logged:
// the caller asserts); 1 when it could not load (no data-loaded="1" in time);
// 2 on bad usage or when the browser could not start.
//
// Environment:
//   SLUICE_BROWSER_TOOLS  directory holding node_modules/puppeteer-core
//                         (scripts/browser-tools.sh dir); else NODE_PATH or a
//                         normal import
//   CHROMIUM              browser executable; else chromium (or
//                         chromium-browser, google-chrome) found on PATH
import { emit, onPage } from "./lib.mjs";

const TOTAL_TIMEOUT_MS = 20_000;
const FIELDS = ["events_in", "applied", "emitted", "dead_letters", "dead_letter_depth", "retries", "lag"];

async function main() {
  const [url, shot] = process.argv.slice(2);
  if (!url || !shot) {
    process.stderr.write("usage: node tests/browser/dashboard.mjs <url> <screenshot.png>\n");
    return 2;
  }
  const out = { console_errors: [], modules: [], title: null, refreshes: 0, error: null };
  return onPage(out, TOTAL_TIMEOUT_MS, async (page, left) => {
    let code = 0;

    try {
      const resp = await page.goto(url, { waitUntil: "load", timeout: left() });
      if (resp && !resp.ok()) throw new Error(`GET ${url}: HTTP ${resp.status()}`);
      await page.waitForSelector('body[data-loaded="1"]', { timeout: left() });
    } catch (e) {
      const waited = e && e.name === "TimeoutError" ? ` (no body[data-loaded="1"] within ${TOTAL_TIMEOUT_MS / 1000} s)` : "";
      out.error = `page did not load: ${e.message}${waited}`;
      code = 1;
    }
    if (code === 0) {
      const n = await page.evaluate(() => Number(document.body.dataset.refreshes || 0));
      try {
        await page.waitForFunction((k) => Number(document.body.dataset.refreshes || 0) > k, { timeout: left(), polling: 100 }, n);
      } catch (e) {
        out.error = `no refresh after the first within ${TOTAL_TIMEOUT_MS / 1000} s`;
      }
    }
    try {
      Object.assign(out, await page.evaluate((fields) => {
        const rows = [...document.querySelectorAll("tr[data-module]")].map((tr) => {
          const cell = (f) => tr.querySelector(`[data-field="${f}"]`);
          const m = { name: tr.dataset.module };
          m.status = cell("status") ? cell("status").dataset.value : null;
          m.lag_status = cell("lag_status") ? cell("lag_status").dataset.value : null;
          for (const f of fields) {
            const c = cell(f);
            m[f] = c && c.dataset.value !== undefined && c.dataset.value !== "" ? Number(c.dataset.value) : null;
          }
          return m;
        });
        return { modules: rows, title: document.title, refreshes: Number(document.body.dataset.refreshes || 0) };
      }, FIELDS));
    } catch (e) {
      if (!out.error) out.error = `could not read the page: ${e.message}`;
    }
    try {
      await page.screenshot({ path: shot, fullPage: true });
    } catch (e) {
      if (!out.error) out.error = `screenshot failed: ${e.message}`;
    }
    return code;
  });
}

main().then((code) => process.exit(code), (e) => {
  emit({ console_errors: [], modules: [], title: null, refreshes: 0, error: String(e && e.stack || e) });
  process.exit(2);
});
