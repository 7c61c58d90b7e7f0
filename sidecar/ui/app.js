// The spend and traffic page: log in with a workload bearer, then read /ui/api/* with it. Only what that bearer may
// see ever reaches the page (the server filters; an admin bearer sees every workload).

import { Unauthorized, forgetBearer, gatewayApi, storeBearer, storedBearer, uiApi } from "./api.js";
import { sparkline, stackedBars } from "./charts.js";
import { count, day, duration, ms, usd, when } from "./format.js";

const LIVE_POLL_MS = 2000;
const LIVE_SAMPLES = 60; // two minutes of requests per second
const PAGE_SIZE = 50;
const NO_KEY = "(none)";

const $ = (selector) => document.querySelector(selector);
const $$ = (selector) => [...document.querySelectorAll(selector)];

const state = {
  me: null,
  next: null, // the generations table's next page (GET /ui/api/generations?before=…)
  liveTimer: null,
  lastLive: null, // {requests, at}: the previous poll, for requests per second
  rps: [],
  models: new Set(),
  providers: new Set(),
};

// ---------------------------------------------------------------------------------------------------------------
// Logging in and out

function showLogin(message) {
  stopLive();
  state.me = null;
  clearData();
  $("#dashboard").hidden = true;
  $("#who").hidden = true;
  $("#login").hidden = false;
  const error = $("#login-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  document.body.dataset.state = "login";
  $("#bearer").focus();
}

function loggedOut(message) {
  forgetBearer();
  showLogin(message);
}

async function logIn(bearer) {
  document.body.dataset.state = "loading";
  try {
    const me = await uiApi("me", {}, bearer);
    storeBearer(bearer);
    showDashboard(me);
  } catch (error) {
    if (error instanceof Unauthorized) {
      loggedOut("That bearer was not accepted by this sidecar. Check it and try again.");
    } else {
      loggedOut(`Could not reach the sidecar: ${error.message}`);
    }
  }
}

function showDashboard(me) {
  state.me = me;
  $("#login").hidden = true;
  $("#login-error").hidden = true;
  $("#bearer").value = "";
  $("#who").hidden = false;
  $("#identity").textContent = me.identity;
  $("#identity").dataset.identity = me.identity;
  $("#admin-badge").hidden = !me.admin;
  for (const element of $$(".admin-only")) element.hidden = !me.admin;
  for (const select of [$("#workload"), $("#filter-workload")]) {
    select.replaceChildren(new Option("all workloads", ""));
    for (const workload of me.admin ? me.workloads : []) select.append(new Option(workload, workload));
  }
  $("#dashboard").hidden = false;
  refreshAll();
  startLive();
}

// Any 401 after login (a rotated token, a restarted sidecar with another one) ends the session; other errors show.
function failed(error) {
  if (error instanceof Unauthorized) {
    loggedOut("The sidecar no longer accepts this bearer. Log in again.");
    return;
  }
  const box = $("#page-error");
  box.textContent = error.message;
  box.hidden = false;
}

function clearData() {
  for (const selector of ["#generations tbody", "#budgets tbody", "#spend-chart", "#tokens-chart", "#errors-chart",
    "#spend-legend", "#tokens-legend", "#errors-legend", "#live-chart", "#known-models", "#known-providers",
    "#spend-table", "#tokens-table", "#errors-table"]) {
    $(selector).replaceChildren();
  }
  for (const summary of $$(".chart-summary")) {
    summary.textContent = "";
    for (const name of Object.keys(summary.dataset)) summary.dataset[name] = "";
  }
  for (const element of $$(".totals dd")) {
    element.textContent = "–";
    for (const name of Object.keys(element.dataset)) element.dataset[name] = "";
  }
  for (const selector of ["#refused", "#range-text", "#totals-note", "#page-error"]) $(selector).textContent = "";
  $("#identity").textContent = "";
  $("#identity").dataset.identity = "";
  $("#load-more").hidden = true;
  state.next = null;
  state.rps = [];
  state.lastLive = null;
  state.models.clear();
  state.providers.clear();
}

// ---------------------------------------------------------------------------------------------------------------
// The range: whole UTC days, as /v1/report counts them

function addDays(date, days) {
  return new Date(date.getTime() + days * 86400000);
}

function currentRange() {
  const period = $("#period").value;
  const today = new Date();
  if (period === "custom") {
    const start = $("#start-date").value || day(addDays(today, -6));
    const end = $("#end-date").value || day(today);
    return { start, end, datePart: $("#date-part").value, since: null };
  }
  if (period === "24h") {
    // Yesterday and today, hourly; the chart and totals keep the last 24 hours of it.
    const since = new Date(Math.floor(today.getTime() / 3600000) * 3600000 - 23 * 3600000);
    return { start: day(addDays(today, -1)), end: day(today), datePart: "hour", since };
  }
  const days = period === "30d" ? 30 : 7;
  return { start: day(addDays(today, -(days - 1))), end: day(today), datePart: "day", since: null };
}

// The x axis: every day or hour of the range, as the API names them (2026-11-21 / 2026-11-21T10:00:00Z).
function periodsOf(range) {
  const periods = [];
  const end = new Date(`${range.end}T23:59:59Z`);
  const step = range.datePart === "hour" ? 3600000 : 86400000;
  let at = range.since ?? new Date(`${range.start}T00:00:00Z`);
  for (; at <= end && periods.length < 24 * 370; at = new Date(at.getTime() + step)) {
    if (range.datePart === "hour" && at > new Date()) break;
    periods.push(periodKey(at.toISOString(), range.datePart));
  }
  return periods;
}

function periodKey(period, datePart) {
  const text = String(period);
  if (datePart === "day") return text.slice(0, 10);
  const date = new Date(text.length === 10 ? `${text}T00:00:00Z` : text);
  return Number.isNaN(date.getTime()) ? text : `${date.toISOString().slice(0, 13)}:00:00Z`;
}

function periodLabel(period) {
  return period.length > 10 ? `${period.slice(5, 10)} ${period.slice(11, 16)}` : period.slice(5);
}

// ---------------------------------------------------------------------------------------------------------------
// Loading the views

async function refreshAll() {
  $("#page-error").hidden = true;
  document.body.dataset.state = "loading";
  const range = currentRange();
  $("#range-text").textContent = range.since
    ? `Since ${when(range.since.toISOString())} UTC`
    : `${range.start} – ${range.end} UTC, per ${range.datePart}`;
  const results = await Promise.allSettled([loadUsage(range), loadErrors(range), loadBudgets(), loadGenerations(true)]);
  const failure = results.find((result) => result.status === "rejected");
  if (failure) {
    failed(failure.reason);
    if (failure.reason instanceof Unauthorized) return;
  }
  document.body.dataset.state = "ready";
}

const SUMS = ["total_cost", "input_tokens", "output_tokens", "cached_input_tokens", "cache_creation_input_tokens",
  "reasoning_tokens", "request_count"];

async function loadUsage(range) {
  const groupBy = $("#group-by").value;
  const body = await uiApi("usage", {
    start_date: range.start,
    end_date: range.end,
    date_part: range.datePart,
    group_by: groupBy,
    workload: $("#workload").value,
  });
  if (!state.me) return;
  const sincePeriod = range.since ? periodKey(range.since.toISOString(), "hour") : null;
  const rows = body.rows
    .map((row) => ({ ...row, period: periodKey(row.period, range.datePart), key: row.key ?? NO_KEY }))
    .filter((row) => sincePeriod === null || row.period >= sincePeriod);
  if (groupBy === "model") for (const row of rows) state.models.add(row.key);
  if (groupBy === "provider") for (const row of rows) state.providers.add(row.key);
  refreshDatalists();
  // The server's totals count each generation once; a window cut out of the range is summed here instead.
  let totals = body.totals;
  if (sincePeriod !== null) {
    totals = Object.fromEntries(SUMS.map((name) => [name, rows.reduce((sum, row) => sum + (row[name] ?? 0), 0)]));
  }
  showTotals(totals, body.totals_note ?? (sincePeriod !== null && groupBy === "tag"
    ? "A generation with several tags counts once per tag here." : null));
  const periods = periodsOf(range);
  stackedBars($("#spend-chart"), $("#spend-legend"), {
    periods,
    points: rows.map((row) => ({ period: row.period, key: row.key, value: row.total_cost })),
    format: usd,
    periodLabel,
    summary: $("#spend-summary"),
    table: $("#spend-table"),
    caption: `Spend (USD) per ${range.datePart} by ${groupBy}`,
  });
  stackedBars($("#tokens-chart"), $("#tokens-legend"), {
    periods,
    points: rows.map((row) => ({ period: row.period, key: row.key, value: row.input_tokens + row.output_tokens })),
    format: count,
    periodLabel,
    whole: true,
    summary: $("#tokens-summary"),
    table: $("#tokens-table"),
    caption: `Tokens (input + output) per ${range.datePart} by ${groupBy}`,
    unit: "token",
  });
}

function showTotals(totals, note) {
  const fields = [
    ["#total-cost", "totalCost", totals.total_cost, usd],
    ["#total-requests", "totalRequests", totals.request_count, count],
    ["#total-input-tokens", "totalInputTokens", totals.input_tokens, count],
    ["#total-output-tokens", "totalOutputTokens", totals.output_tokens, count],
    ["#total-cached-tokens", "totalCachedTokens", totals.cached_input_tokens, count],
    ["#total-reasoning-tokens", "totalReasoningTokens", totals.reasoning_tokens, count],
  ];
  for (const [selector, name, value, format] of fields) {
    const element = $(selector);
    element.textContent = format(value ?? 0);
    element.dataset[name] = String(value ?? 0);
  }
  $("#totals-note").textContent = note ?? "";
  $("#totals-note").hidden = !note;
}

async function loadErrors(range) {
  const body = await uiApi("errors", {
    start_date: range.start,
    end_date: range.end,
    date_part: range.datePart,
    workload: $("#workload").value,
  });
  if (!state.me) return;
  const sincePeriod = range.since ? periodKey(range.since.toISOString(), "hour") : null;
  const points = body.rows
    .map((row) => ({ period: periodKey(row.period, range.datePart), key: row.provider ?? NO_KEY, value: row.count }))
    .filter((point) => sincePeriod === null || point.period >= sincePeriod);
  stackedBars($("#errors-chart"), $("#errors-legend"), {
    periods: periodsOf(range),
    points,
    format: count,
    periodLabel,
    whole: true,
    summary: $("#errors-summary"),
    table: $("#errors-table"),
    caption: `Errors per ${range.datePart} by provider`,
    unit: "error",
  });
  const refused = body.refused ?? {};
  const text = $("#refused");
  const refusedCount = (status) => (refused[status] === null || refused[status] === undefined ? "–" : count(refused[status]));
  text.textContent = `Refused before any provider call: ${refusedCount("429")} × 429 (limits), ` +
    `${refusedCount("503")} × 503 (overloaded)` + (body.refused_source ? ` (counted by ${body.refused_source})` : "");
  text.dataset.refused429 = String(refused["429"] ?? 0);
  text.dataset.refused503 = String(refused["503"] ?? 0);
}

async function loadBudgets() {
  const body = await uiApi("budgets");
  if (!state.me) return;
  const tbody = $("#budgets tbody");
  tbody.replaceChildren();
  for (const row of body.rows) {
    const tr = document.createElement("tr");
    tr.dataset.workload = row.workload;
    const name = document.createElement("th");
    name.scope = "row";
    name.textContent = row.workload;
    const used = document.createElement("td");
    const text = document.createElement("span");
    if (row.budget_usd === null || row.budget_usd === undefined) {
      text.textContent = `${usd(row.used_usd)} (no limit)`;
      used.append(text);
    } else {
      const share = row.budget_usd > 0 ? Math.min(1, row.used_usd / row.budget_usd) : 1;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.setAttribute("role", "meter");
      bar.setAttribute("aria-valuemin", "0");
      bar.setAttribute("aria-valuemax", String(row.budget_usd));
      bar.setAttribute("aria-valuenow", String(row.used_usd));
      bar.setAttribute("aria-label", `${row.workload} budget used`);
      const fill = document.createElement("div");
      fill.className = share >= 1 ? "fill spent" : share >= 0.8 ? "fill high" : "fill";
      fill.style.width = `${(share * 100).toFixed(1)}%`;
      bar.append(fill);
      text.textContent = `${usd(row.used_usd)} of ${usd(row.budget_usd)} per ${row.period}`;
      used.append(bar, text);
    }
    const resets = document.createElement("td");
    resets.textContent = row.resets_at ? when(row.resets_at).replace(" 00:00:00", "") : "never";
    tr.append(name, used, resets);
    tbody.append(tr);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Recent generations

function generationFilters() {
  const form = $("#generation-filters");
  return {
    model: form.elements.model.value.trim(),
    provider: form.elements.provider.value.trim(),
    status: form.elements.status.value,
    workload: state.me?.admin ? form.elements.workload.value : "",
  };
}

async function loadGenerations(reset) {
  const table = $("#generations");
  table.dataset.state = "loading";
  const body = await uiApi("generations", { limit: PAGE_SIZE, before: reset ? "" : state.next, ...generationFilters() });
  if (!state.me) return;
  const tbody = $("#generations tbody");
  if (reset) tbody.replaceChildren();
  for (const row of body.rows) tbody.append(generationRow(row));
  state.next = body.next ?? null;
  $("#load-more").hidden = !state.next;
  $("#generations-empty").hidden = tbody.children.length > 0;
  refreshDatalists();
  table.dataset.state = "ready";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function generationRow(row) {
  state.models.add(row.model);
  state.providers.add(row.provider);
  const tr = document.createElement("tr");
  tr.dataset.generationId = row.id;
  // The contract's status is ok|error; the ledger's API sends the HTTP status the generation ended with (200, 499
  // aborted, the provider's error status). Either way: failed is an error status, "error", or an error type.
  const failedRow = row.status === "error" || Number(row.status) >= 400 || Boolean(row.error_type);
  tr.dataset.status = failedRow ? "error" : "ok";
  tr.dataset.httpStatus = String(row.status);
  tr.dataset.model = row.model;
  tr.dataset.workload = row.workload;
  tr.append(cell(when(row.created_at)));
  if (state.me.admin) tr.append(cell(row.workload));
  tr.append(cell(row.model));
  const code = typeof row.status === "number" ? ` ${row.status}` : "";
  const status = cell(failedRow ? `error${code}${row.error_type ? ` (${row.error_type})` : ""}` : row.finish_reason ?? "ok");
  status.className = failedRow ? "status error" : "status ok";
  tr.append(status);
  tr.append(cell(ms(row.ttft_ms), "num"), cell(ms(row.generation_ms), "num"));
  tr.append(cell(`${count(row.input_tokens)} / ${count(row.output_tokens)}`, "num"), cell(usd(row.total_cost), "num"));
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.textContent = `…${row.id.slice(-10)}`; // the whole id is in the dialog's title
  open.setAttribute("aria-label", `Show the ledger record of ${row.id}`);
  open.addEventListener("click", () => openGeneration(row).catch(failed));
  const last = document.createElement("td");
  last.append(open);
  tr.append(last);
  return tr;
}

// A link cannot carry the bearer, so the record is fetched here and shown in a dialog: /v1/generation for the
// caller's own generations, /ui/api/generation (the same view) for an admin looking at another workload's.
async function openGeneration(row) {
  const own = row.workload === state.me.identity;
  const body = own
    ? await gatewayApi("generation", { id: row.id })
    : await uiApi("generation", { id: row.id, workload: row.workload });
  const pre = $("#generation-json");
  pre.textContent = JSON.stringify(body, null, 2);
  pre.dataset.generationId = row.id;
  pre.dataset.source = own ? "v1/generation" : "ui/api/generation";
  $("#generation-source").textContent = own
    ? `GET /v1/generation?id=${row.id}`
    : `GET /ui/api/generation?id=${row.id}&workload=${row.workload}`;
  $("#generation-dialog-title").textContent = row.id;
  $("#generation-dialog").showModal();
}

function refreshDatalists() {
  for (const [selector, values] of [["#known-models", state.models], ["#known-providers", state.providers]]) {
    $(selector).replaceChildren(...[...values].filter(Boolean).sort().map((value) => new Option(value)));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Live: streams in flight and requests per second, every 2 s

function startLive() {
  stopLive();
  pollLive();
  state.liveTimer = setInterval(pollLive, LIVE_POLL_MS);
}

function stopLive() {
  if (state.liveTimer !== null) clearInterval(state.liveTimer);
  state.liveTimer = null;
}

async function pollLive() {
  let live;
  try {
    live = await uiApi("live");
  } catch (error) {
    failed(error);
    return;
  }
  if (!state.me) return;
  const now = performance.now();
  if (state.lastLive !== null && live.requests_total !== null && state.lastLive.requests !== null) {
    const seconds = (now - state.lastLive.at) / 1000;
    const rate = seconds > 0 ? Math.max(0, live.requests_total - state.lastLive.requests) / seconds : 0;
    state.rps = [...state.rps, rate].slice(-LIVE_SAMPLES);
    $("#live-rps").textContent = rate.toFixed(2);
    $("#live-rps").dataset.rps = String(rate);
    sparkline($("#live-chart"), state.rps);
    // The line in words, for the svg's aria-describedby: now, peak and mean of the window drawn.
    const mean = state.rps.reduce((a, b) => a + b, 0) / state.rps.length;
    $("#live-summary").textContent = `Requests per second over the last ${state.rps.length * LIVE_POLL_MS / 1000} s: ` +
      `now ${rate.toFixed(2)}, peak ${Math.max(...state.rps).toFixed(2)}, mean ${mean.toFixed(2)}.`;
  }
  state.lastLive = { requests: live.requests_total, at: now };
  $("#live-in-flight").textContent = `${count(live.in_flight)} of ${count(live.max_streams)}`;
  $("#live-in-flight").dataset.inFlight = String(live.in_flight);
  $("#live-requests").textContent = live.requests_total === null ? "– (metrics off)" : count(live.requests_total);
  $("#live-requests").dataset.requestsTotal = String(live.requests_total);
  $("#live-generations").textContent = count(live.generations_total);
  $("#live-generations").dataset.generationsTotal = String(live.generations_total);
  $("#live-uptime").textContent = duration(live.uptime_seconds);
}

// ---------------------------------------------------------------------------------------------------------------
// Wiring

function wire() {
  $("#login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const bearer = $("#bearer").value.trim();
    if (bearer) logIn(bearer);
  });
  $("#logout").addEventListener("click", () => loggedOut("Logged out."));
  $("#controls").addEventListener("submit", (event) => {
    event.preventDefault();
    refreshAll();
  });
  $("#period").addEventListener("change", () => {
    const custom = $("#period").value === "custom";
    for (const element of $$(".field.custom")) element.hidden = !custom;
    if (custom && !$("#start-date").value) {
      const range = currentRange();
      $("#start-date").value = range.start;
      $("#end-date").value = range.end;
    }
    refreshAll();
  });
  for (const selector of ["#group-by", "#workload"]) $(selector).addEventListener("change", () => refreshAll());
  $("#generation-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    loadGenerations(true).catch(failed);
  });
  $("#filter-status").addEventListener("change", () => loadGenerations(true).catch(failed));
  $("#filter-workload").addEventListener("change", () => loadGenerations(true).catch(failed));
  $("#load-more").addEventListener("click", () => loadGenerations(false).catch(failed));
  $("#generation-close").addEventListener("click", () => $("#generation-dialog").close());
}

wire();
const bearer = storedBearer();
if (bearer) {
  logIn(bearer);
} else {
  showLogin();
}
