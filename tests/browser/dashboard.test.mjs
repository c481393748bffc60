// Browser test of the tally dashboard.
//
//   node dashboard.test.mjs URL SCREENSHOT_PATH [--expect-ad AD_ID] [--allow-empty]
//                           [--width PX] [--hover] [--key KEY [--only-ads A,B,...]]
//                           [--expect-prompt]
//
// Opens URL in headless Chromium and checks that the page
//   - loads with no console error, page error, failed request or HTTP error;
//   - draws the clicks chart from data (at least one bar with data-clicks > 0),
//     or, with --allow-empty, shows the "No clicks committed yet" empty state
//     when there is no data;
//   - with --expect-ad, charts that ad (typed into the selector) with bars
//     whose clicks sum to more than 0;
//   - refreshes by itself: the "last updated" time advances within 5 s;
//   - fits the viewport width (no horizontal scrolling).
// With --key, it types KEY into the dashboard's key prompt first; with
// --only-ads, every ad the page names (top table, chart) must be one of
// those, and the operator-only figures must be hidden. With
// --expect-prompt (no key), it checks instead that the page shows the key
// prompt and that no request for data succeeds.
// Then it saves a full-page screenshot, prints one summary line and exits 0;
// on any failure it prints why and exits 1. Every wait has a timeout, and
// the whole run is bounded.
//
// Chromium: $CHROMIUM, else /usr/bin/chromium. Runs with --no-sandbox so that
// it works as root.

import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { chromium } from "playwright-core";

const TOTAL_TIMEOUT_MS = 120_000;
const LAUNCH_TIMEOUT_MS = 30_000;
const LOAD_TIMEOUT_MS = 15_000;
const DATA_TIMEOUT_MS = 20_000;
const REFRESH_TIMEOUT_MS = 5_000;

function usage(message) {
  console.error(`dashboard test: ${message}`);
  console.error(
    "usage: node dashboard.test.mjs URL SCREENSHOT_PATH [--expect-ad AD_ID] [--allow-empty] [--width PX] [--hover] [--key KEY [--only-ads A,B]] [--expect-prompt]",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { expectAd: null, allowEmpty: false, width: 1280, hover: false, key: null, onlyAds: null, expectPrompt: false };
  const positional = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--expect-ad") {
      opts.expectAd = argv[++i];
      if (!opts.expectAd) usage("--expect-ad needs an ad id");
    } else if (a === "--allow-empty") {
      opts.allowEmpty = true;
    } else if (a === "--width") {
      opts.width = Number(argv[++i]);
      if (!Number.isInteger(opts.width) || opts.width < 320 || opts.width > 4000) usage("--width needs a pixel width in 320..4000");
    } else if (a === "--hover") {
      opts.hover = true;
    } else if (a === "--key") {
      opts.key = argv[++i];
      if (!opts.key) usage("--key needs an API key");
    } else if (a === "--only-ads") {
      opts.onlyAds = new Set((argv[++i] || "").split(",").filter(Boolean));
      if (!opts.onlyAds.size) usage("--only-ads needs a comma-separated list of ad ids");
    } else if (a === "--expect-prompt") {
      opts.expectPrompt = true;
    } else if (a.startsWith("--")) {
      usage(`unknown option ${a}`);
    } else {
      positional.push(a);
    }
  }
  if (positional.length !== 2) usage("expected URL and SCREENSHOT_PATH");
  [opts.url, opts.screenshot] = positional;
  try {
    new URL(opts.url);
  } catch {
    usage(`not a URL: ${opts.url}`);
  }
  if (opts.expectAd && opts.allowEmpty) usage("--expect-ad needs data: it cannot be combined with --allow-empty");
  if (opts.onlyAds && !opts.key) usage("--only-ads needs --key");
  if (opts.expectPrompt && (opts.key || opts.expectAd)) usage("--expect-prompt is the page without a key: no --key, no --expect-ad");
  return opts;
}

class Failure extends Error {}

// What the dashboard shows, for failure messages.
async function pageState(page) {
  if (!page) return "";
  try {
    const s = await page.evaluate(() => {
      const text = (sel) => document.querySelector(sel)?.textContent.trim().replace(/\s+/g, " ") ?? "(missing)";
      const empty = document.querySelector('[data-testid="chart-empty"]');
      return {
        connection: text('[data-testid="connection"]'),
        connectionTitle: document.querySelector('[data-testid="connection"]')?.title ?? "",
        updated: text('[data-testid="last-updated"]'),
        chart: document.querySelector('[data-testid="clicks-chart"]')?.dataset.key || "(no key)",
        bars: document.querySelectorAll('[data-testid="clicks-chart"] [data-testid="bar"]').length,
        empty: empty && !empty.hidden ? empty.innerText.trim().replace(/\s+/g, " ") : null,
      };
    });
    return (
      `\n  the page shows: connection "${s.connection}"${s.connectionTitle ? ` (${s.connectionTitle})` : ""}, ` +
      `"${s.updated}", chart ${s.chart} with ${s.bars} bars` +
      (s.empty ? `, chart message "${s.empty}"` : "")
    );
  } catch {
    return "";
  }
}

async function step(what, promise, page) {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof Failure) throw err;
    const first = String(err && err.message ? err.message : err).split("\n")[0];
    throw new Failure(`${what}: ${first}${await pageState(page)}`);
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const problems = [];
  let browser;

  const watchdog = setTimeout(() => {
    console.error(`dashboard test: FAILED: gave up after ${TOTAL_TIMEOUT_MS / 1000} s`);
    process.exit(1);
  }, TOTAL_TIMEOUT_MS);

  try {
    const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
    browser = await step(
      `launching ${executablePath}`,
      chromium.launch({
        executablePath,
        headless: true,
        timeout: LAUNCH_TIMEOUT_MS,
        args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
      }),
    );
    const context = await browser.newContext({ viewport: { width: opts.width, height: 900 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    page.setDefaultTimeout(DATA_TIMEOUT_MS);

    let closing = false;
    // Before a key is typed in, a 401 is the page asking for one (Chromium
    // also logs it to the console).
    let keyGiven = false;
    const asking = (text) => !keyGiven && /status of 401/.test(text);
    page.on("console", (msg) => {
      if (msg.type() === "error" && !asking(msg.text())) problems.push(`console error: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("requestfailed", (req) => {
      if (!closing) problems.push(`request failed: ${req.method()} ${req.url()} (${req.failure()?.errorText ?? "unknown"})`);
    });
    const dataAnswers = [];
    page.on("response", (res) => {
      if (new URL(res.url()).pathname.startsWith("/v1/")) dataAnswers.push(res.status());
      if (res.status() === 401 && !keyGiven) return;
      if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.request().method()} ${res.url()}`);
    });

    const response = await step(`loading ${opts.url}`, page.goto(opts.url, { waitUntil: "load", timeout: LOAD_TIMEOUT_MS }));
    if (!response || !response.ok()) throw new Failure(`loading ${opts.url}: HTTP ${response ? response.status() : "no response"}`);
    const title = await page.title();
    if (!/tally/i.test(title)) throw new Failure(`page title is ${JSON.stringify(title)}, expected it to name tally`);

    const prompt = '[data-testid="key-prompt"]';
    if (opts.expectPrompt) {
      await step("waiting for the key prompt", page.waitForSelector(prompt, { state: "visible", timeout: DATA_TIMEOUT_MS }), page);
      await page.waitForTimeout(3000);
      const ok = dataAnswers.filter((status) => status < 400);
      if (ok.length) throw new Failure(`without a key, ${ok.length} data request(s) succeeded`);
      if (!dataAnswers.length) throw new Failure("without a key, the page asked for no data at all");
      if (!(await page.locator(prompt).isVisible())) throw new Failure("the key prompt went away without a key");
      if (await page.locator('[data-testid="kpis"]').isVisible()) throw new Failure("the figures show without a key");
      const path = resolve(opts.screenshot);
      mkdirSync(dirname(path), { recursive: true });
      await step(`saving screenshot to ${path}`, page.screenshot({ path, fullPage: true, timeout: 15_000 }));
      if (problems.length) throw new Failure(`${problems.length} browser error(s):\n  ${problems.join("\n  ")}`);
      closing = true;
      console.log(`dashboard test: OK: ${opts.url}: without a key, the key prompt and ${dataAnswers.length} refused data requests; screenshot ${path}`);
      return;
    }
    if (opts.key) {
      await step("waiting for the key prompt", page.waitForSelector(prompt, { state: "visible", timeout: DATA_TIMEOUT_MS }), page);
      keyGiven = true;
      await page.fill('[data-testid="key-input"]', opts.key);
      await page.click('[data-testid="key-submit"]');
    }

    // Data, or the empty state.
    const chartState = await step(
      opts.allowEmpty ? "waiting for chart bars or the empty state" : "waiting for the chart to draw bars from data",
      page.waitForFunction(
        (allowEmpty) => {
          const bars = [...document.querySelectorAll('[data-testid="clicks-chart"] [data-testid="bar"]')];
          const clicks = bars.reduce((a, b) => a + Number(b.dataset.clicks || 0), 0);
          if (bars.length > 0 && clicks > 0) return { kind: "data", bars: bars.length, clicks };
          const empty = document.querySelector('[data-testid="chart-empty"]');
          const updated = Number(document.querySelector('[data-testid="last-updated"]')?.dataset.updatedMs || 0);
          if (allowEmpty && updated > 0 && empty && !empty.hidden && /No clicks committed yet/.test(empty.textContent)) {
            return { kind: "empty", text: empty.textContent.trim() };
          }
          return false;
        },
        opts.allowEmpty,
        { timeout: DATA_TIMEOUT_MS, polling: 200 },
      ).then((h) => h.jsonValue()),
      page,
    );
    let described;
    if (chartState.kind === "data") {
      described = `${chartState.bars} bars (${chartState.clicks.toLocaleString("en-US")} clicks)`;
    } else {
      const topEmpty = await page.locator('[data-testid="top-empty"]').count();
      if (topEmpty === 0) throw new Failure("empty state: the chart says no clicks but the top table is not empty");
      described = `empty state ("No clicks committed yet")`;
    }

    if (opts.expectAd) {
      await page.selectOption('[data-testid="key-type"]', "ad");
      await page.fill('[data-testid="key-id"]', opts.expectAd);
      await page.click('[data-testid="key-show"]');
      const ad = await step(
        `waiting for the chart of ad ${opts.expectAd} to show clicks`,
        page.waitForFunction(
          (key) => {
            const svg = document.querySelector('[data-testid="clicks-chart"]');
            if (!svg || svg.dataset.key !== `ad:${key}`) return false;
            const bars = [...svg.querySelectorAll('[data-testid="bar"]')];
            const clicks = bars.reduce((a, b) => a + Number(b.dataset.clicks || 0), 0);
            return clicks > 0 ? { bars: bars.length, clicks } : false;
          },
          opts.expectAd,
          { timeout: DATA_TIMEOUT_MS, polling: 200 },
        ).then((h) => h.jsonValue()),
        page,
      );
      described += `; ad ${opts.expectAd}: ${ad.bars} bars, ${ad.clicks.toLocaleString("en-US")} clicks`;
    }

    if (opts.onlyAds) {
      const named = await page.evaluate(() => {
        const ads = [...document.querySelectorAll('[data-testid="top-ads"] .keylink')].map((b) => b.dataset.key);
        const chart = document.querySelector('[data-testid="clicks-chart"]')?.dataset.key || "";
        const hidden = ["kpi-ingest", "kpi-duplicates"].every((id) => {
          const el = document.querySelector(`[data-testid="${id}"]`);
          return el && getComputedStyle(el).display === "none";
        });
        return { ads, chart, hidden };
      });
      const foreign = named.ads.filter((ad) => !opts.onlyAds.has(ad));
      if (!named.ads.length) throw new Failure("the top table names no ad");
      if (foreign.length) throw new Failure(`the top table shows ads not of this key: ${foreign.join(", ")}`);
      if (named.chart.startsWith("ad:") && !opts.onlyAds.has(named.chart.slice(3))) throw new Failure(`the chart shows ${named.chart}`);
      if (!named.hidden) throw new Failure("an advertiser key sees the operator's figures");
      if (await page.locator(prompt).isVisible()) throw new Failure("the key prompt stays after a key was taken");
      described += `; only this key's ads (${named.ads.length} in the top table)`;
    }

    // Refresh: the "last updated" stamp must advance within 5 s.
    const updatedMs = () => page.$eval('[data-testid="last-updated"]', (el) => Number(el.dataset.updatedMs || 0));
    const before = await updatedMs();
    const kpisBefore = await page.$eval('[data-testid="kpis"]', (el) => el.innerText);
    const t0 = Date.now();
    await step(
      `waiting ${REFRESH_TIMEOUT_MS / 1000} s for the page to refresh (last updated ${before ? new Date(before).toISOString() : "never"})`,
      page.waitForFunction(
        (prev) => Number(document.querySelector('[data-testid="last-updated"]')?.dataset.updatedMs || 0) > prev,
        before,
        { timeout: REFRESH_TIMEOUT_MS, polling: 100 },
      ),
      page,
    );
    const refreshedIn = (Date.now() - t0) / 1000;
    const kpisChanged = (await page.$eval('[data-testid="kpis"]', (el) => el.innerText)) !== kpisBefore;

    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    if (overflow > 1) throw new Failure(`page is ${overflow}px wider than the ${opts.width}px viewport`);

    if (opts.hover) {
      const bar = page.locator('[data-testid="bar"]').last();
      if (await bar.count()) await bar.hover({ timeout: 5000 });
    }

    const path = resolve(opts.screenshot);
    mkdirSync(dirname(path), { recursive: true });
    await step(`saving screenshot to ${path}`, page.screenshot({ path, fullPage: true, timeout: 15_000 }));
    const size = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.scrollHeight]);

    if (problems.length) throw new Failure(`${problems.length} browser error(s):\n  ${problems.join("\n  ")}`);

    closing = true;
    console.log(
      `dashboard test: OK: ${opts.url}: ${described}; refreshed after ${refreshedIn.toFixed(1)} s` +
        `${kpisChanged ? " (KPIs changed)" : ""}; no console errors; screenshot ${path} ` +
        `(${size[0]}x${size[1]}); ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
  } catch (err) {
    const message = err instanceof Failure ? err.message : String(err && err.stack ? err.stack : err);
    console.error(`dashboard test: FAILED: ${message}`);
    if (problems.length && !(err instanceof Failure && message.includes("browser error"))) {
      console.error(`  also seen in the browser:\n  ${problems.join("\n  ")}`);
    }
    process.exitCode = 1;
  } finally {
    clearTimeout(watchdog);
    if (browser) await browser.close().catch(() => {});
  }
}

await main();
