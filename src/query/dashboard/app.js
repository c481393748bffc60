// tally dashboard: polls the query API and draws KPIs, a clicks-per-minute
// chart and the top tables. Plain browser JavaScript, no dependencies.
"use strict";

(() => {
  const REFRESH_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;
  const STALE_MS = 6000;
  const MINUTE = 60000;
  const RANGE_MINUTES = 60;
  const RATE_SPAN_MS = 10000;
  const SPARK_POINTS = 60;
  const LATE_ROWS = 8;
  // The late ledger holds one entry per key type and window of each late
  // click, so it is read for a short span and less often than the rest.
  const LATE_MINUTES = 5;
  const LATE_REFRESH_MS = 10000;
  const ID_PATTERN = /^[A-Za-z0-9._:-]{1,64}$/;
  // The API key lives in this tab's session storage only.
  const KEY_STORAGE = "tally.key";
  const PLURAL = { ad: "ads", campaign: "campaigns", advertiser: "advertisers" };
  const TYPE_LABEL = { ad: "Ad", campaign: "Campaign", advertiser: "Advertiser" };

  const $ = (id) => document.getElementById(id);
  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const oneFmt = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

  const state = {
    selection: { type: "ad", id: null, follow: true },
    samples: [], // { t, accepted } from /v1/stats, oldest first
    rates: [], // ingest rate per refresh, for the sparkline
    stats: null,
    top: null,
    series: null, // { key_type, key, rows } for the chart
    range: null, // { start, end } of the chart
    late: null,
    seriesError: null,
    lateError: null,
    lateAt: 0,
    lastOk: 0,
    failure: null,
    hover: null, // index of the hovered minute in the chart
    inputError: null,
    timer: null,
    running: false,
    again: false,
    key: sessionStorage.getItem(KEY_STORAGE) || "",
    scope: null, // GET /v1/key: what the key reads
    locked: false, // waiting for a key: no polling
  };

  // ---------- formatting ----------

  const pad = (n) => String(n).padStart(2, "0");
  const hhmm = (ms) => {
    const d = new Date(ms);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  };
  const hhmmss = (ms) => `${hhmm(ms)}:${pad(new Date(ms).getUTCSeconds())}`;
  const ymd = (ms) => new Date(ms).toISOString().slice(0, 10);
  const num = (n) => (n == null || !Number.isFinite(n) ? "—" : intFmt.format(n));
  const seconds = (ms) => {
    const s = ms / 1000;
    return s < 10 ? oneFmt.format(s) : intFmt.format(Math.round(s));
  };
  const ago = (ms) => {
    if (ms < 1000) return "just now";
    if (ms < 90000) return `${seconds(ms)} s ago`;
    if (ms < 90 * MINUTE) return `${intFmt.format(Math.round(ms / MINUTE))} min ago`;
    return `${intFmt.format(Math.round(ms / 3600000))} h ago`;
  };
  const esc = (s) =>
    String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const ceilMinute = (ms) => Math.floor(ms / MINUTE) * MINUTE + MINUTE;

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  // ---------- data ----------

  class ApiError extends Error {}
  // The key is missing or refused (401): ask for one.
  class KeyError extends Error {}

  async function getJSON(path) {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    const headers = { Accept: "application/json" };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    try {
      const res = await fetch(path, { signal: ctl.signal, cache: "no-store", headers });
      const body = await res.json().catch(() => null);
      if (res.status === 401) throw new KeyError(body && body.reason ? body.reason : "the key was refused");
      if (!res.ok) {
        const why = body && body.reason ? `${body.field}: ${body.reason}` : `HTTP ${res.status}`;
        throw new ApiError(`${path.split("?")[0]}: ${why}`);
      }
      if (body === null) throw new ApiError(`${path.split("?")[0]}: response is not JSON`);
      return body;
    } catch (err) {
      if (err.name === "AbortError") throw new ApiError(`${path.split("?")[0]}: no answer within ${FETCH_TIMEOUT_MS / 1000} s`);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  function clicksPath(sel, range) {
    const id = encodeURIComponent(sel.id);
    return `v1/${PLURAL[sel.type]}/${id}/clicks?window=1m&from=${range.start}&to=${range.end}`;
  }

  // The chart covers the 60 minutes up to the latest window the job has
  // results for (or up to the watermark, or the server's clock).
  function chartRange(stats, top) {
    const marks = [];
    if (top && top.window_end != null) marks.push(top.window_end);
    if (stats.watermark != null) marks.push(ceilMinute(stats.watermark));
    const end = marks.length ? Math.max(...marks) : ceilMinute(stats.now_ms);
    return { start: end - RANGE_MINUTES * MINUTE, end };
  }

  function recordIngest(stats) {
    const accepted = stats.ingest ? stats.ingest.accepted : null;
    if (accepted == null) return;
    const last = state.samples[state.samples.length - 1];
    if (last && (accepted < last.accepted || stats.now_ms <= last.t)) {
      if (accepted < last.accepted) state.samples = []; // counters restarted
      else return;
    }
    state.samples.push({ t: stats.now_ms, accepted });
    while (state.samples.length > 2 && stats.now_ms - state.samples[1].t >= RATE_SPAN_MS) state.samples.shift();
    const rate = ingestRate();
    if (rate != null) {
      state.rates.push(rate);
      if (state.rates.length > SPARK_POINTS) state.rates.shift();
    }
  }

  function ingestRate() {
    const s = state.samples;
    if (s.length < 2) return null;
    const first = s[0];
    const last = s[s.length - 1];
    return ((last.accepted - first.accepted) * 1000) / (last.t - first.t);
  }

  function schedule(delay) {
    clearTimeout(state.timer);
    state.timer = setTimeout(refresh, delay);
  }

  async function refresh() {
    if (state.running) {
      state.again = true;
      return;
    }
    if (state.locked) return;
    state.running = true;
    const started = Date.now();
    try {
      if (!state.scope) {
        state.scope = await getJSON("v1/key");
        renderScope();
      }
      // An advertiser key reads no process figures (/v1/stats): its view
      // takes freshness from the top answer.
      const operator = !state.scope.advertiser;
      const [read, top] = await Promise.all([operator ? getJSON("v1/stats") : Promise.resolve(null), getJSON("v1/top?window=1m&k=10")]);
      const stats = read || {
        now_ms: Date.now(),
        committed_epoch: top.committed_epoch,
        watermark: top.watermark,
        watermark_lag_ms: top.watermark == null ? null : Math.max(0, Date.now() - top.watermark),
        ingest: null,
        job: null,
      };
      recordIngest(stats);
      const topAd = top.ads && top.ads[0];
      if (state.selection.follow && topAd) state.selection = { type: "ad", id: topAd.key, follow: true };
      const range = chartRange(stats, top);
      const sel = { ...state.selection };
      const wantSeries = sel.id && !state.inputError;
      // A bad id or a late-ledger error shows in its own panel; only the
      // stats and top answers decide whether the page is live.
      const settle = (p) => p.then((body) => ({ body }), (err) => ({ error: String(err.message || err) }));
      const wantLate = !state.late || Date.now() - state.lateAt >= LATE_REFRESH_MS;
      const [series, late] = await Promise.all([
        wantSeries ? settle(getJSON(clicksPath(sel, range))) : Promise.resolve({ body: null }),
        wantLate ? settle(getJSON(`v1/late?from=${range.end - LATE_MINUTES * MINUTE}&to=${range.end}&limit=1000`)) : Promise.resolve({}),
      ]);
      Object.assign(state, { stats, top, range, failure: null, lastOk: Date.now() });
      const same = sel.type === state.selection.type && sel.id === state.selection.id;
      if (same) {
        state.seriesError = series.error || null;
        state.series = series.body ? { key_type: sel.type, key: sel.id, rows: series.body.rows || [] } : null;
      }
      if (wantLate) {
        state.lateError = late.error || null;
        if (late.body) {
          state.late = late.body;
          state.lateAt = Date.now();
        }
      }
      render();
    } catch (err) {
      if (err instanceof KeyError) {
        askForKey(state.key ? `Key refused: ${err.message}` : "");
        return;
      }
      state.failure = err instanceof ApiError ? err.message : `network error (${err.message})`;
      renderHealth();
    } finally {
      state.running = false;
      if (state.locked) return;
      if (state.again) {
        state.again = false;
        schedule(0);
      } else {
        schedule(Math.max(0, REFRESH_MS - (Date.now() - started)));
      }
    }
  }

  // ---------- API key ----------

  // Shows the key prompt (with why, if a key was refused) and stops
  // polling until a key is given; the refused key is forgotten.
  function askForKey(message) {
    state.locked = true;
    state.key = "";
    state.scope = null;
    sessionStorage.removeItem(KEY_STORAGE);
    clearTimeout(state.timer);
    $("page").hidden = true;
    $("key-scope").hidden = true;
    $("keygate").hidden = false;
    setText("keygate-msg", message);
    $("keygate-input").value = "";
    $("keygate-input").focus();
  }

  function useKey(key) {
    state.key = key.trim();
    sessionStorage.setItem(KEY_STORAGE, state.key);
    Object.assign(state, { scope: null, locked: false, stats: null, top: null, series: null, late: null, samples: [], rates: [] });
    $("keygate").hidden = true;
    $("page").hidden = false;
    schedule(0);
  }

  function renderScope() {
    const adv = state.scope && state.scope.advertiser;
    document.body.dataset.view = adv ? "advertiser" : "operator";
    const button = $("key-scope");
    button.hidden = !state.scope || !state.scope.keys_required;
    setText("key-scope", adv ? `Advertiser ${adv} · change key` : "Operator · change key");
  }

  // ---------- selection ----------

  function readHash() {
    const m = /^#(ad|campaign|advertiser)=(.+)$/.exec(location.hash);
    if (!m) return;
    let id;
    try {
      id = decodeURIComponent(m[2]);
    } catch {
      return;
    }
    state.selection = { type: m[1], id, follow: false };
    state.inputError = ID_PATTERN.test(id) ? null : id;
  }

  function writeHash() {
    const sel = state.selection;
    const hash = sel.follow ? "" : `#${sel.type}=${encodeURIComponent(sel.id)}`;
    history.replaceState(null, "", hash || location.pathname + location.search);
  }

  function select(type, id) {
    id = id.trim();
    if (!id) {
      followTop();
      return;
    }
    state.selection = { type, id, follow: false };
    state.inputError = ID_PATTERN.test(id) ? null : id;
    state.series = null;
    state.seriesError = null;
    state.hover = null;
    writeHash();
    syncPicker(true);
    render();
    schedule(0);
  }

  function followTop() {
    state.selection = { type: "ad", id: null, follow: true };
    state.inputError = null;
    state.series = null;
    state.seriesError = null;
    writeHash();
    syncPicker(true);
    render();
    schedule(0);
  }

  function syncPicker(force) {
    const input = $("key-id");
    const sel = state.selection;
    if (force || document.activeElement !== input) {
      if (input.value !== (sel.id || "")) input.value = sel.id || "";
      $("key-type").value = sel.type;
    }
    $("key-top").classList.toggle("btn--on", sel.follow);
    $("key-top").setAttribute("aria-pressed", String(sel.follow));
  }

  // ---------- rendering ----------

  function render() {
    renderHealth();
    renderKpis();
    renderChart();
    renderTop();
    renderLate();
    syncPicker(false);
  }

  function renderHealth() {
    const pill = $("conn");
    const age = Date.now() - state.lastOk;
    let cls;
    let text;
    if (state.failure) {
      cls = "pill--bad";
      text = "Reconnecting";
      pill.title = state.failure;
    } else if (!state.lastOk) {
      cls = "pill--wait";
      text = "Connecting…";
      pill.title = "";
    } else if (age > STALE_MS) {
      cls = "pill--warn";
      text = "Stale";
      pill.title = `last answer ${ago(age)}`;
    } else {
      cls = "pill--ok";
      text = "Live";
      pill.title = "refreshing every 2 s";
    }
    pill.className = `pill ${cls}`;
    setText("conn", text);
    const upd = $("updated");
    if (state.lastOk) {
      upd.dataset.updatedMs = String(state.lastOk);
      setText("updated", `Updated ${hhmmss(state.lastOk)} UTC`);
    }
  }

  function renderKpis() {
    const { stats, top } = state;
    if (!stats) return;
    const rate = ingestRate();
    setText("kpi-ingest", rate == null ? "—" : rate > 0 && rate < 10 ? oneFmt.format(rate) : num(Math.round(rate)));
    const ing = stats.ingest || {};
    setText("kpi-ingest-sub", `${num(ing.accepted)} accepted · ${num(ing.rejected)} rejected`);
    drawSpark();

    const topAd = top && top.ads && top.ads[0];
    if (topAd && top.total_clicks > 0) {
      const share = (100 * topAd.clicks) / top.total_clicks;
      setText("kpi-viral", oneFmt.format(share));
      $("viral-meter").style.width = `${Math.min(100, share).toFixed(1)}%`;
      setText("kpi-viral-sub", `${topAd.key} · ${num(topAd.clicks)} of ${num(top.total_clicks)} at ${hhmm(top.window_start)}`);
    } else {
      setText("kpi-viral", "—");
      $("viral-meter").style.width = "0%";
      setText("kpi-viral-sub", "no clicks committed yet");
    }

    const job = stats.job || {};
    const late = (job.restating || 0) + (job.held || 0);
    setText("kpi-late", num(late));
    setText("kpi-late-sub", `${num(job.restating)} restating · ${num(job.held)} held`);

    setText("kpi-dup", num(job.duplicates));
    const seen = (job.on_time || 0) + (job.duplicates || 0) + late;
    setText("kpi-dup-sub", seen > 0 ? `${oneFmt.format((100 * job.duplicates) / seen)}% of clicks read by the job` : "no clicks read yet");

    const lag = stats.watermark_lag_ms;
    setText("kpi-lag", lag == null ? "—" : seconds(lag));
    $("kpi-lag").closest(".kpi").classList.toggle("kpi--warn", lag != null && lag > 30000);
    setText("kpi-lag-sub", stats.watermark == null ? "no watermark yet" : `watermark ${hhmmss(stats.watermark)} UTC`);

    const epoch = stats.committed_epoch;
    setText("kpi-epoch", epoch == null ? "—" : hhmmss(epoch));
    setText("kpi-epoch-sub", epoch == null ? "nothing committed yet" : `UTC, ${ymd(epoch)} · ${ago(Math.max(0, stats.now_ms - epoch))}`);
  }

  function drawSpark() {
    const svg = $("spark-ingest");
    const r = state.rates;
    if (r.length < 2) {
      svg.innerHTML = "";
      return;
    }
    const max = Math.max(...r) * 1.1 || 1;
    const min = Math.min(0, ...r);
    const step = 120 / (r.length - 1);
    const x0 = 0;
    const pts = r.map((v, i) => `${(x0 + i * step).toFixed(1)},${(27 - (25 * (v - min)) / (max - min)).toFixed(1)}`);
    svg.innerHTML =
      `<path class="spark__area" d="M${x0.toFixed(1)},28 L${pts.join(" L")} L120,28 Z"></path>` +
      `<polyline class="spark__line" points="${pts.join(" ")}"></polyline>`;
  }

  function niceStep(max, ticks) {
    const raw = max / ticks;
    const mag = 10 ** Math.floor(Math.log10(raw));
    const f = raw / mag;
    return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * mag;
  }

  function chartSlots() {
    const { range, series } = state;
    const slots = new Array(RANGE_MINUTES).fill(null);
    if (!range || !series) return slots;
    for (const row of series.rows) {
      const i = Math.round((row.window_start - range.start) / MINUTE);
      if (i >= 0 && i < RANGE_MINUTES) slots[i] = row;
    }
    return slots;
  }

  function chartGeometry() {
    const box = $("chart");
    const width = Math.max(320, Math.floor(box.clientWidth));
    const height = width < 640 ? 240 : 300;
    const m = { l: 64, r: 12, t: 12, b: 48 };
    return { width, height, m, pw: width - m.l - m.r, ph: height - m.t - m.b };
  }

  function renderChart() {
    const svg = $("chart-svg");
    const { range, series, stats, selection: sel } = state;
    const slots = chartSlots();
    const present = slots.filter(Boolean);
    const max = present.reduce((a, r) => Math.max(a, r.clicks), 0);
    const step = max > 0 ? niceStep(max, 4) : 5;
    const yMax = Math.max(step, Math.ceil(max / step) * step);
    const g = chartGeometry();
    const { m, pw, ph } = g;
    const slot = pw / RANGE_MINUTES;
    const barW = Math.max(1, slot * 0.72);
    const y = (v) => m.t + ph - (v / yMax) * ph;
    const parts = [];

    parts.push(
      `<defs><pattern id="hatch" width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">` +
        `<rect width="5" height="5" class="hatch__bg"></rect><rect width="2.2" height="5" class="hatch__fg"></rect></pattern></defs>`,
    );
    for (let v = 0; v <= yMax + step / 2; v += step) {
      const yy = y(v).toFixed(1);
      parts.push(`<line class="grid${v === 0 ? " grid--base" : ""}" x1="${m.l}" x2="${m.l + pw}" y1="${yy}" y2="${yy}"></line>`);
      parts.push(`<text class="tick tick--y" x="${m.l - 8}" y="${yy}" dy="0.32em">${num(v)}</text>`);
    }
    if (range) {
      const labelEvery = pw < 420 ? 20 : 10;
      for (let i = 0; i <= RANGE_MINUTES; i++) {
        const t = range.start + i * MINUTE;
        if (new Date(t).getUTCMinutes() % labelEvery !== 0) continue;
        const x = (m.l + i * slot).toFixed(1);
        parts.push(`<line class="xtick" x1="${x}" x2="${x}" y1="${m.t + ph}" y2="${m.t + ph + 5}"></line>`);
        parts.push(`<text class="tick tick--x" x="${x}" y="${m.t + ph + 18}">${hhmm(t)}</text>`);
      }
    }
    parts.push(
      `<text class="axis-title" transform="translate(14 ${m.t + ph / 2}) rotate(-90)">Clicks per minute</text>`,
      `<text class="axis-title" x="${m.l + pw / 2}" y="${g.height - 6}">Window start (UTC, HH:MM)</text>`,
    );
    if (state.hover != null && range) {
      parts.push(`<rect class="hover-band" x="${(m.l + state.hover * slot).toFixed(1)}" y="${m.t}" width="${slot.toFixed(1)}" height="${ph}"></rect>`);
    }
    parts.push(`<g data-testid="bars">`);
    slots.forEach((row, i) => {
      if (!row) return;
      const top = y(row.clicks);
      const h = Math.max(1, m.t + ph - top);
      parts.push(
        `<rect class="bar bar--${esc(row.status)}" data-testid="bar" data-clicks="${row.clicks}" ` +
          `data-window-start="${row.window_start}" data-status="${esc(row.status)}" ` +
          `x="${(m.l + i * slot + (slot - barW) / 2).toFixed(1)}" y="${(m.t + ph - h).toFixed(1)}" ` +
          `width="${barW.toFixed(1)}" height="${h.toFixed(1)}" rx="${Math.min(2, barW / 3).toFixed(1)}">` +
          `<title>${esc(tipText(row))}</title></rect>`,
      );
    });
    parts.push(`</g>`);

    svg.setAttribute("viewBox", `0 0 ${g.width} ${g.height}`);
    svg.setAttribute("width", g.width);
    svg.setAttribute("height", g.height);
    svg.dataset.key = series ? `${series.key_type}:${series.key}` : "";
    svg.innerHTML = parts.join("");

    // Title, summary and empty state.
    const who = sel.id ? `${TYPE_LABEL[sel.type]} ${sel.id}` : "Top ad";
    setText("chart-title", `Clicks per minute · ${who}`);
    setText(
      "chart-meta",
      range
        ? `1-minute windows from ${hhmm(range.start)} to ${hhmm(range.end)} UTC${sel.follow ? " · following the top ad" : ""}`
        : "Last 60 minutes, 1-minute windows, times in UTC",
    );
    renderSummary(present);

    const empty = $("chart-empty");
    let message = null;
    if (state.inputError != null) {
      message = [`“${state.inputError}” is not a valid id`, "Ids are 1–64 letters, digits or . _ : -"];
    } else if (state.seriesError) {
      message = [`Cannot load ${sel.type} ${sel.id}`, state.seriesError];
    } else if (!stats) {
      message = state.failure ? ["Cannot reach tally", state.failure] : ["Loading…", ""];
    } else if (stats.committed_epoch == null || (sel.follow && !sel.id)) {
      message = ["No clicks committed yet", "The chart fills in when the first epoch commits."];
    } else if (series && present.length === 0) {
      message = [`No clicks for ${sel.type} ${sel.id} in the last 60 minutes`, "Check the id, or pick one from the top tables below."];
    }
    if (message) {
      empty.innerHTML = `<strong>${esc(message[0])}</strong><span>${esc(message[1])}</span>`;
      empty.hidden = false;
    } else {
      empty.hidden = true;
    }
    updateTip();
  }

  function renderSummary(present) {
    const el = $("chart-summary");
    if (!present.length) {
      el.innerHTML = "";
      return;
    }
    const total = present.reduce((a, r) => a + r.clicks, 0);
    const peak = present.reduce((a, r) => (r.clicks > a.clicks ? r : a), present[0]);
    const latest = present[present.length - 1];
    const restated = present.filter((r) => r.status === "restated").length;
    const stat = (label, value, note) =>
      `<div class="stat"><span class="stat__label">${esc(label)}</span><span class="stat__value">${value}</span>` +
      (note ? `<span class="stat__note">${esc(note)}</span>` : "") +
      `</div>`;
    el.innerHTML = [
      stat("Clicks, 60 min", num(total), ""),
      stat("Peak", `${num(peak.clicks)}<small>/min</small>`, `at ${hhmm(peak.window_start)}`),
      stat("Latest", `${num(latest.clicks)}<small>/min</small>`, `${hhmm(latest.window_start)} · ${latest.status}`),
      stat("Restated windows", num(restated), `of ${num(present.length)} with clicks`),
    ].join("");
  }

  function versionText(row) {
    return row.status === "partial" ? "early result" : `version ${num(row.version)}`;
  }

  function tipText(row) {
    return (
      `${hhmm(row.window_start)}–${hhmm(row.window_end)} UTC: ${num(row.clicks)} clicks, ` +
      `${num(row.distinct_users)} distinct users, ${row.status} (${versionText(row)})`
    );
  }

  function updateTip() {
    const tip = $("tip");
    const { range } = state;
    if (state.hover == null || !range) {
      tip.hidden = true;
      return;
    }
    const row = chartSlots()[state.hover];
    const start = range.start + state.hover * MINUTE;
    tip.innerHTML = row
      ? `<div class="tip__time">${hhmm(start)}–${hhmm(start + MINUTE)} UTC</div>` +
        `<div class="tip__big">${num(row.clicks)} <small>clicks</small></div>` +
        `<div>${num(row.distinct_users)} distinct users</div>` +
        `<div><span class="badge badge--${esc(row.status)}">${esc(row.status)}</span> ${versionText(row)}</div>`
      : `<div class="tip__time">${hhmm(start)}–${hhmm(start + MINUTE)} UTC</div><div>no clicks</div>`;
    const g = chartGeometry();
    const slot = g.pw / RANGE_MINUTES;
    const x = g.m.l + state.hover * slot;
    tip.hidden = false;
    const w = tip.offsetWidth;
    // Beside the hovered bar, on the side with more room.
    const left = x > g.width / 2 ? x - w - 8 : x + slot + 8;
    tip.style.left = `${Math.min(Math.max(4, left), g.width - w - 4)}px`;
    tip.style.top = `${g.m.t + 4}px`;
  }

  function onChartMove(ev) {
    const g = chartGeometry();
    const rect = $("chart-svg").getBoundingClientRect();
    const x = ((ev.clientX - rect.left) * g.width) / rect.width;
    const i = Math.floor((x - g.m.l) / (g.pw / RANGE_MINUTES));
    const hover = state.range && i >= 0 && i < RANGE_MINUTES ? i : null;
    if (hover !== state.hover) {
      state.hover = hover;
      renderChart();
    }
  }

  function topRows(entries, type, total) {
    if (!entries || !entries.length) {
      return `<tr class="table__empty" data-testid="top-empty"><td colspan="5">No clicks committed yet</td></tr>`;
    }
    const max = entries[0].clicks || 1;
    const sel = state.selection;
    return entries
      .map((e, i) => {
        const share = total > 0 ? ` (${oneFmt.format((100 * e.clicks) / total)}% of all clicks)` : "";
        const on = sel.type === type && sel.id === e.key ? " is-selected" : "";
        return (
          `<tr class="${on.trim()}" data-key="${esc(e.key)}" data-clicks="${e.clicks}">` +
          `<td class="num rank">${i + 1}</td>` +
          `<td><button type="button" class="keylink" data-type="${type}" data-key="${esc(e.key)}" title="Chart ${esc(e.key)}">${esc(e.key)}</button></td>` +
          `<td class="num"><div class="cell-bar" title="${num(e.clicks)} clicks${share}">` +
          `<span class="cell-bar__fill" data-fill="${((100 * e.clicks) / max).toFixed(1)}"></span>` +
          `<span class="cell-bar__val">${num(e.clicks)}</span></div></td>` +
          `<td class="num">${num(e.distinct_users)}</td>` +
          `<td><span class="badge badge--${esc(e.status)}" title="${esc(versionText(e))}">${esc(e.status)}</span></td>` +
          `</tr>`
        );
      })
      .join("");
  }

  // Bar widths are set from script: the page's CSP allows no inline style.
  function fillBars(table) {
    for (const bar of table.querySelectorAll(".cell-bar__fill")) bar.style.width = `${bar.dataset.fill}%`;
  }

  function renderTop() {
    const { top } = state;
    if (!top) return;
    $("top-ads").innerHTML = topRows(top.ads, "ad", top.total_clicks);
    $("top-campaigns").innerHTML = topRows(top.campaigns, "campaign", top.total_clicks);
    fillBars($("top-ads"));
    fillBars($("top-campaigns"));
    const meta =
      top.window_start == null
        ? "Latest 1-minute window · nothing committed yet"
        : `Window ${hhmm(top.window_start)}–${hhmm(top.window_end)} UTC · ${num(top.total_clicks)} clicks in all`;
    setText("top-meta", meta);
    setText("top-cmp-meta", meta);
    const keys = [...(top.ads || []).map((e) => e.key), ...(top.campaigns || []).map((e) => e.key)];
    const list = $("key-suggestions");
    const html = keys.map((k) => `<option value="${esc(k)}"></option>`).join("");
    if (list.innerHTML !== html) list.innerHTML = html;
  }

  // The ledger has one entry per (key type, key, window): a late click shows
  // up once per key type, so the panel lists the chart's key type only.
  function renderLate() {
    const { late } = state;
    if (state.lateError) {
      setText("late-meta", `Late ledger unavailable: ${state.lateError}`);
      return;
    }
    if (!late) return;
    const sel = state.selection;
    const type = sel.type;
    const entries = (late.entries || [])
      .filter((e) => e.key_type === type)
      .sort((a, b) => b.batch - a.batch || b.window_start - a.window_start || (a.key < b.key ? -1 : 1));
    const count = (e) => (e.request_ids ? e.request_ids.length : 0);
    const clicks = entries.reduce((a, e) => a + count(e), 0);
    const more = late.next != null ? "at least " : "";
    setText("late-title", `Recent late clicks · by ${type}`);
    setText("late-key-head", TYPE_LABEL[type]);
    setText(
      "late-meta",
      entries.length
        ? `${more}${num(clicks)} too-late clicks on ${num(new Set(entries.map((e) => e.key)).size)} ${PLURAL[type]} ` +
            `in windows of the last ${LATE_MINUTES} minutes · newest ${Math.min(LATE_ROWS, entries.length)} shown`
        : `Too-late clicks in windows of the last ${LATE_MINUTES} minutes, newest first`,
    );
    $("late").innerHTML = entries.length
      ? entries
          .slice(0, LATE_ROWS)
          .map((e) => {
            const on = sel.id === e.key ? ` class="is-selected"` : "";
            const outcome = e.held ? "held" : "restating";
            const hint = e.held ? "too late to restate: kept in the ledger only" : "applied in a restating batch";
            return (
              `<tr${on}><td><button type="button" class="keylink" data-type="${esc(e.key_type)}" data-key="${esc(e.key)}">${esc(e.key)}</button></td>` +
              `<td>${hhmm(e.window_start)}–${hhmm(e.window_start + MINUTE)}</td>` +
              `<td>${hhmmss(e.batch)}</td>` +
              `<td class="num">${num(count(e))}</td>` +
              `<td><span class="badge badge--${e.held ? "held" : "restated"}" title="${hint}">${outcome}</span></td></tr>`
            );
          })
          .join("")
      : `<tr class="table__empty" data-testid="late-empty"><td colspan="5">No late clicks in the last ${LATE_MINUTES} minutes</td></tr>`;
  }


  // ---------- start ----------

  function start() {
    readHash();
    syncPicker(true);
    $("picker").addEventListener("submit", (ev) => {
      ev.preventDefault();
      select($("key-type").value, $("key-id").value);
    });
    $("key-top").addEventListener("click", followTop);
    $("keygate-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      useKey($("keygate-input").value);
    });
    $("key-scope").addEventListener("click", () => askForKey(""));
    document.addEventListener("click", (ev) => {
      const btn = ev.target.closest(".keylink");
      if (btn) select(btn.dataset.type, btn.dataset.key);
    });
    const svg = $("chart-svg");
    svg.addEventListener("mousemove", onChartMove);
    svg.addEventListener("mouseleave", () => {
      state.hover = null;
      renderChart();
    });
    window.addEventListener("hashchange", () => {
      readHash();
      syncPicker(true);
      schedule(0);
    });
    let pending = false;
    new ResizeObserver(() => {
      if (pending) return;
      pending = true;
      requestAnimationFrame(() => {
        pending = false;
        renderChart();
      });
    }).observe($("chart"));
    setInterval(renderHealth, 1000);
    render();
    refresh();
  }

  start();
})();
