#!/usr/bin/env node
// Opens the Sluice event catalog in headless Chromium and reports what it
// shows.
//
//   node tests/browser/catalog.mjs <catalog url> <screenshot.png>
//   node tests/browser/catalog.mjs --via-dashboard <dashboard url> <screenshot.png>
//   node tests/browser/catalog.mjs --via-dashboard --token <token> <dashboard url> <screenshot.png>
//
// With --via-dashboard it loads the dashboard first and follows its
// "Event catalog" link; with --token the host's reads need a token: it
// gives the token to the dashboard's form first, and reads the catalog in
// the tab the link opens (and the AsyncAPI document its link points to,
// as "asyncapi_version"). Then it reads the page, types "payment" into the
// filter box and reads which sections stay visible.
//
// Prints ONE JSON line on stdout:
//   {"console_errors": [...], "error": null | "...", "url": "<page shown>",
//    "title": "...", "counts": {"topics", "types", "versions", "modules"},
//    "asyncapi_href": "...", "asyncapi_version": "3.0.0" and
//    "dashboard_console_errors": [...] (with --token; console_errors are then the catalog tab's),
//    "topics": [{"name", "types": ["order.created v1", ...], "producers": [...], "consumers": [...]}],
//    "types": [{"name", "owner", "mode", "producers": [...], "consumers": [...],
//               "versions": n, "diffs": n, "added_lines": n, "removed_lines": n,
//               "breaks": n, "examples": n}],
//    "modules": [{"name", "reads", "writes"}],
//    "filtered": {"query": "payment", "types": [...], "topics": [...], "modules": [...]}}
// Exit 0 when the page loaded (whatever it logged: the caller asserts), 1 when
// it did not, 2 on bad usage or when the browser could not start.
// Environment: SLUICE_BROWSER_TOOLS and CHROMIUM, as for dashboard.mjs.
import { collectErrors, emit, onPage } from "./lib.mjs";

const TOTAL_TIMEOUT_MS = 20_000;

async function main() {
  const args = process.argv.slice(2);
  const viaDashboard = args[0] === "--via-dashboard";
  if (viaDashboard) args.shift();
  let token = null;
  if (args[0] === "--token") {
    token = args[1];
    args.splice(0, 2);
  }
  const [url, shot] = args;
  if (!url || !shot || (token !== null && !viaDashboard)) {
    process.stderr.write("usage: node tests/browser/catalog.mjs [--via-dashboard [--token <token>]] <url> <screenshot.png>\n");
    return 2;
  }
  const out = { console_errors: [], error: null };
  return onPage(out, TOTAL_TIMEOUT_MS, async (first, left) => {
    let code = 0;
    let page = first;
    try {
      if (viaDashboard) {
        const resp = await page.goto(url, { waitUntil: "load", timeout: left() });
        if (resp && !resp.ok()) throw new Error(`GET ${url}: HTTP ${resp.status()}`);
        if (token !== null) {
          await page.waitForSelector("#auth:not([hidden])", { timeout: left() });
          await page.type("#token", token);
          await page.click('#auth button[type="submit"]');
        }
        await page.waitForSelector('body[data-loaded="1"]', { timeout: left() });
        if (token !== null) {
          const opened = page.browser().waitForTarget((t) => t.opener() === page.target(), { timeout: left() });
          await page.click("#catalog-link");
          page = await (await opened).page();
          // What the dashboard logged (its reads answered 401 until it had
          // the token) apart from what the catalog's tab logs.
          out.dashboard_console_errors = out.console_errors.splice(0);
          collectErrors(page, out.console_errors);
          await page.waitForFunction(() => document.readyState === "complete", { timeout: left() });
        } else {
          await Promise.all([
            page.waitForNavigation({ waitUntil: "load", timeout: left() }),
            page.click("#catalog-link"),
          ]);
        }
      } else {
        const resp = await page.goto(url, { waitUntil: "load", timeout: left() });
        if (resp && !resp.ok()) throw new Error(`GET ${url}: HTTP ${resp.status()}`);
      }
      await page.waitForSelector("#types", { timeout: left() });
    } catch (e) {
      out.error = `page did not load: ${e.message}`;
      code = 1;
    }
    if (code === 0) {
      out.url = page.url();
      if (token !== null) {
        // The document the page links to, as the page reaches it.
        out.asyncapi_version = await page.evaluate(async () => {
          const r = await fetch(document.getElementById("asyncapi-link").href);
          return (await r.json()).asyncapi;
        });
      }
      Object.assign(out, await page.evaluate(() => {
        const text = (el) => (el ? el.textContent.trim() : null);
        const all = (root, sel) => [...root.querySelectorAll(sel)];
        const names = (cell) => (cell ? all(cell, "a").map((a) => a.textContent.trim()) : []);
        const num = (id) => Number(text(document.getElementById(id)));
        return {
          title: document.title,
          counts: { topics: num("count-topics"), types: num("count-types"), versions: num("count-versions"), modules: num("count-modules") },
          asyncapi_href: document.getElementById("asyncapi-link").getAttribute("href"),
          topics: all(document, "tr.topic").map((tr) => ({
            name: text(tr.cells[0]),
            types: all(tr.cells[1], "a").map((a) => a.textContent.replace(/\s+/g, " ").trim()),
            producers: names(tr.cells[2]),
            consumers: names(tr.cells[3]),
          })),
          types: all(document, "article.type").map((a) => ({
            name: text(a.querySelector("h3")),
            owner: text(a.querySelector("dd.owner")),
            mode: text(a.querySelector("dd.mode")),
            producers: names(a.querySelector("dd.producers")),
            consumers: names(a.querySelector("dd.consumers")),
            versions: all(a, "details.version").length,
            diffs: all(a, "pre.diff").length,
            added_lines: all(a, "pre.diff .add").length,
            removed_lines: all(a, "pre.diff .del").length,
            breaks: all(a, ".verdicts li.breaks").length,
            examples: all(a, "pre.example").length,
          })),
          modules: all(document, "tr.module").map((tr) => ({
            name: text(tr.cells[0]), reads: text(tr.cells[2]), writes: text(tr.cells[3]),
          })),
        };
      }));
      await page.type("#filter", "payment");
      out.filtered = await page.evaluate(() => {
        const shown = (sel, name) => [...document.querySelectorAll(sel)]
          .filter((el) => el.offsetParent !== null)
          .map(name);
        return {
          query: document.getElementById("filter").value,
          types: shown("article.type", (a) => a.querySelector("h3").textContent.trim()),
          topics: shown("tr.topic", (tr) => tr.cells[0].textContent.trim()),
          modules: shown("tr.module", (tr) => tr.cells[0].textContent.trim()),
        };
      });
      await page.evaluate(() => { const f = document.getElementById("filter"); f.value = ""; f.dispatchEvent(new Event("input")); });
      try {
        await page.screenshot({ path: shot, fullPage: true });
      } catch (e) {
        out.error = `screenshot failed: ${e.message}`;
      }
    }
    return code;
  });
}

main().then((code) => process.exit(code), (e) => {
  emit({ console_errors: [], error: String(e && e.stack || e) });
  process.exit(2);
});
