// What the browser and Node test scripts share: finding the pinned npm
// packages (SLUICE_BROWSER_TOOLS, from scripts/browser-tools.sh dir), finding
// and launching the system Chromium with a fresh profile, and collecting what
// a page logs as errors.
import { createRequire } from "node:module";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

// The npm package `name`: from $SLUICE_BROWSER_TOOLS/node_modules, else
// NODE_PATH (CommonJS resolution honours it; ESM imports do not), else a
// normal import. The module object as it is (CommonJS exports, or an ES
// module namespace).
export async function loadPackage(name) {
  const tried = [];
  const dir = process.env.SLUICE_BROWSER_TOOLS;
  if (dir) {
    try {
      return createRequire(path.join(path.resolve(dir), "package.json"))(name);
    } catch (e) { tried.push(`SLUICE_BROWSER_TOOLS=${dir}: ${e.message.split("\n")[0]}`); }
  }
  try {
    return createRequire(import.meta.url)(name);
  } catch (e) { tried.push(`require: ${e.message.split("\n")[0]}`); }
  try {
    return await import(name);
  } catch (e) { tried.push(`import: ${e.message.split("\n")[0]}`); }
  throw new Error(`${name} not found (run scripts/browser-tools.sh dir and set SLUICE_BROWSER_TOOLS):\n  ` + tried.join("\n  "));
}

// $CHROMIUM, else chromium (or chromium-browser, google-chrome) on PATH.
export function findChromium() {
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

// Headless Chromium with a profile of its own; close() ends it and removes
// the profile.
export async function launch(timeoutMs) {
  const pkg = await loadPackage("puppeteer-core");
  const puppeteer = pkg.default ?? pkg;
  const executablePath = findChromium();
  const profile = mkdtempSync(path.join(tmpdir(), "sluice-chromium-"));
  let browser;
  try {
    browser = await puppeteer.launch({
      executablePath,
      headless: true,
      userDataDir: profile,
      args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"],
      defaultViewport: { width: 1440, height: 900 },
      timeout: timeoutMs,
    });
  } catch (e) {
    try { rmSync(profile, { recursive: true, force: true }); } catch { /* ignore */ }
    throw e;
  }
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      try { rmSync(profile, { recursive: true, force: true }); } catch { /* ignore */ }
    },
  };
}

// Push onto `errors` every console error or warning, uncaught page error and
// failed request of `page`.
export function collectErrors(page, errors) {
  page.on("console", (msg) => {
    const type = msg.type();
    if (type === "error" || type === "warn" || type === "warning") {
      const loc = msg.location && msg.location();
      errors.push(`console.${type}: ${msg.text()}` + (loc && loc.url ? ` (${loc.url}${loc.lineNumber != null ? ":" + loc.lineNumber : ""})` : ""));
    }
  });
  page.on("pageerror", (err) => errors.push(`pageerror: ${err && err.message ? err.message : String(err)}`));
  page.on("requestfailed", (req) => {
    const f = req.failure();
    errors.push(`requestfailed: ${req.method()} ${req.url()}: ${f ? f.errorText : "failed"}`);
  });
}

// One JSON line on stdout: what the Rust test reads.
export function emit(out) { process.stdout.write(JSON.stringify(out) + "\n"); }

// Run `body(page, left)` on a new page of a new browser, all within
// `timeoutMs` (`left()` is what remains, for puppeteer's timeouts). The
// page's errors go to `out.console_errors`; a throw, to `out.error`. Prints
// `out` as one JSON line and returns the exit code: what `body` returned
// (0 when nothing), 1 when it threw, 2 when the browser could not start.
export async function onPage(out, timeoutMs, body) {
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  let session;
  try {
    session = await launch(left());
  } catch (e) {
    out.error = `browser: ${e.message}`;
    emit(out);
    return 2;
  }
  let code = 0;
  try {
    const page = await session.browser.newPage();
    collectErrors(page, out.console_errors);
    code = (await body(page, left)) || 0;
  } catch (e) {
    out.error = out.error || `browser: ${e.message}`;
    code = 1;
  } finally {
    await session.close();
  }
  emit(out);
  return code;
}
