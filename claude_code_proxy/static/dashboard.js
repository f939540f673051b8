// The usage dashboard: plain script, no library, no other origin (see api/usage.py).
// Every value from the server is written with textContent, never as markup.
"use strict";

(function () {
  const KEY_STORAGE = "claude-code-proxy.api-key";
  const REFRESH_MS = 10000;
  const SVG_NS = "http://www.w3.org/2000/svg";

  // Errors are shown in the page too, so a broken dashboard is visible (and testable).
  function reportError(message) {
    const list = document.getElementById("js-errors");
    if (!list) return;
    const item = document.createElement("li");
    item.textContent = String(message);
    list.appendChild(item);
    list.hidden = false;
  }
  window.addEventListener("error", (event) => reportError(event.message || "script error"));
  window.addEventListener("unhandledrejection", (event) => reportError("unhandled rejection: " + event.reason));

  // --- formatting (fixed, not locale-dependent, so the numbers read the same everywhere) ---
  function fmtInt(n) {
    if (n === null || n === undefined) return "–";
    return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }
  // Cents and fractions; below a cent, two significant digits, so a request of a few tokens
  // never shows as $0.0000 (the same rule as `claude-code-proxy usage`).
  function fmtCost(n) {
    if (n === null || n === undefined) return "–";
    if (n === 0) return "$0.00";
    if (n >= 100) return "$" + fmtInt(Math.round(n));
    if (n >= 1) return "$" + n.toFixed(2);
    return "$" + n.toFixed(Math.min(12, Math.max(4, 1 - Math.floor(Math.log10(n)))));
  }
  function fmtPct(rate) {
    return (rate * 100).toFixed(1) + "%";
  }
  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "–";
    return fmtInt(ms) + " ms";
  }
  function pad(n) {
    return String(n).padStart(2, "0");
  }
  function fmtTime(epoch) {
    const d = new Date(epoch * 1000);
    const today = new Date();
    const hms = pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
    if (d.toDateString() === today.toDateString()) return hms;
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + hms;
  }

  // --- the API key: this tab's sessionStorage only ---
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORAGE) || "";
    } catch (e) {
      return "";
    }
  }
  function setKey(value) {
    try {
      if (value) sessionStorage.setItem(KEY_STORAGE, value);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch (e) {
      reportError("sessionStorage is unavailable: " + e);
    }
    document.getElementById("forget-key").hidden = !value;
  }

  class AuthRequired extends Error {}

  async function getUsage(params) {
    const headers = { Accept: "application/json" };
    const key = storedKey();
    if (key) headers.Authorization = "Bearer " + key;
    const response = await fetch("/usage?" + new URLSearchParams(params), { headers, cache: "no-store" });
    if (response.status === 401 || response.status === 403) throw new AuthRequired();
    const body = await response.json();
    if (!response.ok) {
      const message = body && body.error && body.error.message ? body.error.message : "HTTP " + response.status;
      throw new Error(message);
    }
    return body;
  }

  function setStatus(state, text) {
    const status = document.getElementById("status");
    status.dataset.state = state;
    status.textContent = text;
  }

  function put(metric, text) {
    for (const el of document.querySelectorAll('[data-metric="' + metric + '"]')) el.textContent = text;
  }

  function putTotals(prefix, totals) {
    put(prefix + ".requests", fmtInt(totals.requests));
    put(prefix + ".errors", fmtInt(totals.errors));
    put(prefix + ".input_tokens", fmtInt(totals.input_tokens));
    put(prefix + ".output_tokens", fmtInt(totals.output_tokens));
    put(prefix + ".cache_read_tokens", fmtInt(totals.cache_read_tokens));
    put(prefix + ".cache_creation_tokens", fmtInt(totals.cache_creation_tokens));
    put(prefix + ".cost_usd", fmtCost(totals.cost_usd));
    put(prefix + ".error_rate", fmtPct(totals.error_rate));
  }

  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
    if (parent) parent.appendChild(el);
    return el;
  }

  function drawHourly(series) {
    const chart = document.getElementById("hourly-chart");
    while (chart.firstChild) chart.removeChild(chart.firstChild);
    const hours = new Array(24).fill(null).map(() => ({ requests: 0, errors: 0 }));
    for (const bucket of series) {
      const hour = Number(bucket.key.slice(11, 13)); // "YYYY-MM-DD HH:00", server local time
      if (hour >= 0 && hour < 24) hours[hour] = bucket;
    }
    const max = Math.max(1, ...hours.map((h) => h.requests));
    const left = 36, top = 10, width = 670, height = 170, slot = width / 24;
    svg("line", { x1: left, y1: top + height, x2: left + width, y2: top + height, class: "axis" }, chart);
    svg("line", { x1: left, y1: top, x2: left + width, y2: top, class: "axis" }, chart);
    svg("text", { x: left - 6, y: top + 4, "text-anchor": "end" }, chart).textContent = fmtInt(max);
    svg("text", { x: left - 6, y: top + height, "text-anchor": "end" }, chart).textContent = "0";
    hours.forEach((h, hour) => {
      const x = left + hour * slot + slot * 0.15;
      const w = slot * 0.7;
      const okHeight = ((h.requests - h.errors) / max) * height;
      const errHeight = (h.errors / max) * height;
      const group = svg("g", { "data-hour": hour, "data-requests": h.requests }, chart);
      svg("title", {}, group).textContent = pad(hour) + ":00 · " + h.requests + " requests, " + h.errors + " failed";
      if (okHeight > 0) svg("rect", { x, y: top + height - okHeight, width: w, height: okHeight, class: "bar-ok" }, group);
      if (errHeight > 0) {
        svg("rect", { x, y: top + height - okHeight - errHeight, width: w, height: errHeight, class: "bar-err" }, group);
      }
      if (hour % 3 === 0) {
        svg("text", { x: left + hour * slot + slot / 2, y: top + height + 16, "text-anchor": "middle" }, chart)
          .textContent = pad(hour) + "h";
      }
    });
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function emptyRow(body, columns, text) {
    const row = document.createElement("tr");
    row.className = "empty";
    const td = cell(row, text);
    td.colSpan = columns;
    body.appendChild(row);
  }

  // One table per grouping: by model, by API key ("" is requests made without a key).
  function drawGroups(bodyId, series) {
    const body = document.getElementById(bodyId);
    body.replaceChildren();
    if (!series.length) return emptyRow(body, 9, "No requests this month.");
    const max = Math.max(1, ...series.map((s) => s.requests));
    for (const s of series) {
      const row = document.createElement("tr");
      row.dataset.group = s.key;
      if (bodyId === "models") row.dataset.model = s.key;
      const name = s.key || "(no key)";
      cell(row, name, "model").title = name;
      cell(row, fmtInt(s.requests), "num");
      cell(row, fmtInt(s.errors), "num");
      cell(row, fmtInt(s.input_tokens), "num");
      cell(row, fmtInt(s.output_tokens), "num");
      cell(row, fmtInt(s.cache_read_tokens), "num");
      cell(row, fmtInt(s.cache_creation_tokens), "num");
      cell(row, fmtCost(s.cost_usd), "num");
      const bar = document.createElement("div");
      bar.className = "share";
      bar.style.width = ((s.requests / max) * 100).toFixed(1) + "%";
      cell(row, "").appendChild(bar);
      body.appendChild(row);
    }
  }

  function drawRecent(records) {
    const body = document.getElementById("recent");
    body.replaceChildren();
    if (!records.length) return emptyRow(body, 13, "No requests recorded yet.");
    for (const r of records) {
      const row = document.createElement("tr");
      row.dataset.requestId = r.request_id;
      cell(row, fmtTime(r.ts));
      cell(row, r.surface);
      cell(row, r.key_name || "–", "client");
      cell(row, r.client, "client");
      // What the client asked for, and what it resolved to: the model that answered, else
      // (no model answered) the name handed to the CLI, else nothing (rejected before that).
      const asked = r.model_requested || "–";
      cell(row, asked, "model").title = asked;
      const resolved = r.model_used || r.model_resolved || "";
      const to = cell(row, resolved || "–", r.model_used ? "resolved" : "resolved unanswered");
      to.title = r.model_used
        ? "answered by " + r.model_used
        : resolved
          ? "resolved to " + resolved + "; no model answered"
          : "rejected before its model was resolved";
      cell(row, r.stream ? "yes" : "no");
      cell(row, String(r.status) + (r.error_kind ? " " + r.error_kind : ""), r.status >= 400 ? "num status-err" : "num");
      cell(row, fmtMs(r.duration_ms), "num");
      cell(row, fmtMs(r.ttft_ms), "num");
      cell(row, fmtInt(r.input_tokens), "num");
      cell(row, fmtInt(r.output_tokens), "num");
      cell(row, fmtCost(r.cost_usd), "num");
      body.appendChild(row);
    }
  }

  const WINDOW_NAMES = { five_hour: "5-hour", seven_day: "weekly", seven_day_opus: "weekly Opus",
    seven_day_sonnet: "weekly Sonnet" };

  async function getQuota() {
    const key = storedKey();
    const headers = key ? { Authorization: "Bearer " + key } : {};
    const response = await fetch("/v1/usage/quota", { headers, cache: "no-store" });
    if (!response.ok) return null;
    return response.json();
  }

  function drawQuota(q) {
    const panel = document.getElementById("quota");
    const body = document.getElementById("quota-windows");
    body.replaceChildren();
    if (!q) return;
    const login = q.login || {};
    document.getElementById("quota-login").textContent =
      [login.auth_method, login.subscription_type].filter(Boolean).join(" · ");
    panel.dataset.state = !q.reported ? "unknown" : q.limited ? "limited" : q.status;
    let summary;
    if (!q.reported) summary = q.note;
    else if (q.limited) summary = "Limited: the " + q.window_name + " limit is reached. Requests fail fast until it resets at " + fmtTime(q.resets_at) + ".";
    else summary = "Status " + q.status + " (" + q.window_name + " window" +
      (q.utilization != null ? ", " + fmtPct(q.utilization) + " used" : "") + "), resets at " + fmtTime(q.resets_at) + ".";
    if (q.reported && q.overage && q.overage.status) summary += " Extra usage: " + q.overage.status +
      (q.overage.disabled_reason ? " (" + q.overage.disabled_reason + ")" : "") + ".";
    document.getElementById("quota-summary").textContent = summary;
    const windows = q.windows || {};
    for (const name of Object.keys(windows)) {
      const w = windows[name];
      const row = document.createElement("tr");
      row.dataset.window = name;
      cell(row, WINDOW_NAMES[name] || name);
      cell(row, w.status || "–", w.status === "rejected" ? "status-err" : "");
      cell(row, w.utilization != null ? fmtPct(w.utilization) : "–", "num");
      const bar = document.createElement("div");
      bar.className = "share";
      bar.style.width = (Math.min(1, w.utilization || 0) * 100).toFixed(1) + "%";
      cell(row, "").appendChild(bar);
      cell(row, w.resets_at ? fmtTime(w.resets_at) : "–");
      body.appendChild(row);
    }
  }

  function fillKeyFilter(names) {
    const select = document.getElementById("key-filter");
    const have = new Set(Array.from(select.options).map((o) => o.value));
    for (const name of names) {
      if (have.has(name)) continue;
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      select.appendChild(option);
    }
  }

  function startOfToday() {
    const d = new Date();
    d.setHours(0, 0, 0, 0);
    return d;
  }
  function startOfMonth() {
    const d = startOfToday();
    d.setDate(1);
    return d;
  }

  let busy = false;
  let refreshes = 0;

  async function refresh() {
    if (busy) return;
    busy = true;
    const today = startOfToday();
    const month = startOfMonth();
    const todaySince = Math.floor(today.getTime() / 1000);
    const monthSince = Math.floor(month.getTime() / 1000);
    // What the numbers on screen were asked for, so anyone can ask /usage the same.
    document.body.dataset.todaySince = String(todaySince);
    document.body.dataset.monthSince = String(monthSince);
    const key = document.getElementById("key-filter").value;
    const only = key ? { key } : {};
    document.body.dataset.key = key;
    try {
      const [day, mon, byKey, quota] = await Promise.all([
        getUsage({ since: todaySince, group_by: "hour", recent: 25, ...only }),
        getUsage({ since: monthSince, group_by: "model", recent: 0, ...only }),
        getUsage({ since: monthSince, group_by: "key", recent: 0 }),
        getQuota(),
      ]);
      document.getElementById("login").hidden = true;
      document.getElementById("today-range").textContent = today.toDateString();
      document.getElementById("month-range").textContent =
        month.toLocaleString("en", { month: "long" }) + " " + month.getFullYear();
      putTotals("today", day.totals);
      putTotals("month", mon.totals);
      for (const name of ["duration_ms", "ttft_ms"]) {
        const p = day.percentiles[name];
        put("today." + name + ".p50", fmtMs(p.p50));
        put("today." + name + ".p95", fmtMs(p.p95));
        put("today." + name + ".count", fmtInt(p.count));
      }
      drawHourly(day.series);
      drawGroups("models", mon.series);
      drawGroups("keys", byKey.series);
      drawQuota(quota);
      fillKeyFilter(byKey.series.map((s) => s.key).filter((name) => name));
      drawRecent(day.recent);
      const info = day.ledger;
      document.getElementById("ledger-info").textContent = info.enabled
        ? "Rows are kept " + info.retention_days + " days." + (info.write_errors ? " Write errors: " + info.write_errors + "." : "")
        : "The ledger is disabled (CLAUDE_PROXY_USAGE_DB is empty).";
      refreshes += 1;
      document.body.dataset.refreshes = String(refreshes);
      setStatus("ok", "updated " + fmtTime(Date.now() / 1000));
    } catch (err) {
      if (err instanceof AuthRequired) {
        setKey("");
        document.getElementById("login").hidden = false;
        setStatus("auth", "API key required");
      } else {
        setStatus("error", "update failed: " + (err && err.message ? err.message : err));
      }
    } finally {
      busy = false;
    }
  }

  function start() {
    document.getElementById("forget-key").hidden = !storedKey();
    document.getElementById("login").addEventListener("submit", (event) => {
      event.preventDefault();
      const input = document.getElementById("api-key");
      setKey(input.value.trim());
      input.value = "";
      refresh();
    });
    document.getElementById("key-filter").addEventListener("change", () => refresh());
    document.getElementById("forget-key").addEventListener("click", () => {
      setKey("");
      refresh();
    });
    refresh();
    setInterval(refresh, REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
