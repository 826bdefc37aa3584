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
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const TOTAL_TIMEOUT_MS = 20_000;
const FIELDS = ["events_in", "applied", "emitted", "dead_letters", "dead_letter_depth", "retries", "lag"];

async function loadPuppeteer() {
  const tried = [];
  const dir = process.env.SLUICE_BROWSER_TOOLS;
  if (dir) {
    try {
      const mod = createRequire(path.join(path.resolve(dir), "package.json"))("puppeteer-core");
      return mod.default ?? mod;
    } catch (e) { tried.push(`SLUICE_BROWSER_TOOLS=${dir}: ${e.message}`); }
  }
  // CommonJS resolution honours NODE_PATH (ESM imports do not).
  try {
    const mod = createRequire(import.meta.url)("puppeteer-core");
    return mod.default ?? mod;
  } catch (e) { tried.push(`require: ${e.message.split("\n")[0]}`); }
  try {
    const mod = await import("puppeteer-core");
    return mod.default ?? mod;
  } catch (e) { tried.push(`import: ${e.message.split("\n")[0]}`); }
  throw new Error("puppeteer-core not found (run scripts/browser-tools.sh dir and set SLUICE_BROWSER_TOOLS):\n  " + tried.join("\n  "));
}

function findChromium() {
  if (process.env.CHROMIUM) return process.env.CHROMIUM;
  for (const name of ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]) {
    for (const d of (process.env.PATH || "").split(path.delimiter)) {
      if (!d) continue;
      const p = path.join(d, name);
      try { if (existsSync(p) && statSync(p).isFile()) return p; } catch { /* next */ }
    }
  }
  throw new Error("no Chromium found: install it (scripts/browser-tools.sh) or set CHROMIUM");
}

function emit(out) { process.stdout.write(JSON.stringify(out) + "\n"); }

async function main() {
  const [url, shot] = process.argv.slice(2);
  if (!url || !shot) {
    process.stderr.write("usage: node tests/browser/dashboard.mjs <url> <screenshot.png>\n");
    return 2;
  }
  const deadline = Date.now() + TOTAL_TIMEOUT_MS;
  const left = () => Math.max(1, deadline - Date.now());
  const out = { console_errors: [], modules: [], title: null, refreshes: 0, error: null };

  let puppeteer, executablePath;
  try {
    puppeteer = await loadPuppeteer();
    executablePath = findChromium();
  } catch (e) {
    out.error = e.message;
    emit(out);
    return 2;
  }

  const profile = mkdtempSync(path.join(tmpdir(), "sluice-chromium-"));
  let browser;
  let code = 0;
  try {
    browser = await puppeteer.launch({
      executablePath,
      headless: true,
      userDataDir: profile,
      args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      defaultViewport: { width: 1440, height: 900 },
      timeout: left(),
    });
    const page = await browser.newPage();
    await page.setViewport({ width: 1440, height: 900 });
    page.on("console", (msg) => {
      const type = msg.type();
      if (type === "error" || type === "warn" || type === "warning") {
        const loc = msg.location && msg.location();
        out.console_errors.push(`console.${type}: ${msg.text()}` + (loc && loc.url ? ` (${loc.url}${loc.lineNumber != null ? ":" + loc.lineNumber : ""})` : ""));
      }
    });
    page.on("pageerror", (err) => out.console_errors.push(`pageerror: ${err && err.message ? err.message : String(err)}`));
    page.on("requestfailed", (req) => {
      const f = req.failure();
      out.console_errors.push(`requestfailed: ${req.method()} ${req.url()}: ${f ? f.errorText : "failed"}`);
    });

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
  } catch (e) {
    out.error = out.error || `browser: ${e.message}`;
    code = browser ? 1 : 2;
  } finally {
    if (browser) await browser.close().catch(() => {});
    try { rmSync(profile, { recursive: true, force: true }); } catch { /* ignore */ }
  }
  emit(out);
  return code;
}

main().then((code) => process.exit(code), (e) => {
  emit({ console_errors: [], modules: [], title: null, refreshes: 0, error: String(e && e.stack || e) });
  process.exit(2);
});
