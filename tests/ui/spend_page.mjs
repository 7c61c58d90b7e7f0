// Drives the /ui page in Debian's Chromium (playwright-core, executablePath /usr/bin/chromium: no downloaded
// browser) and prints one JSON object of what it saw; test_spend_page.py judges it. Scenario on stdin:
// {url, chromium, screenshot, wrong_token, admin_token, plain_token, start_date, end_date, model, admin_open_id, plain_open_id}

import { chromium } from "playwright-core";

const scenario = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (chunk) => { text += chunk; });
  process.stdin.on("end", () => resolve(text));
}));

// The flags the machine notes give: without the background-networking ones Chromium dials Google's hosts.
const FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync"];
const TIMEOUT = 15000;

const events = { console: [], pageErrors: [], requestFailed: [], badResponses: [], requests: [] };
const result = { events };

const browser = await chromium.launch({ executablePath: scenario.chromium, headless: true, args: FLAGS });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      events.console.push({ type: message.type(), text: message.text(), url: message.location().url });
    }
  });
  page.on("pageerror", (error) => events.pageErrors.push(String(error)));
  page.on("requestfailed", (request) => {
    events.requestFailed.push({ url: request.url(), error: request.failure()?.errorText });
  });
  page.on("request", (request) => {
    const authorization = request.headers().authorization ?? null;
    events.requests.push({ url: request.url(), method: request.method(), authorization });
  });
  page.on("response", (response) => {
    if (response.status() >= 400) events.badResponses.push({ url: response.url(), status: response.status() });
  });

  const ready = () => page.waitForFunction(() => document.body.dataset.state === "ready");
  const tableReady = () => page.waitForFunction(() => document.querySelector("#generations").dataset.state === "ready");
  const rows = () => page.$$eval("#generations tbody tr", (trs) => trs.map((tr) => ({ ...tr.dataset })));
  const seen = () => page.evaluate(() => ({
    state: document.body.dataset.state,
    dashboardHidden: document.querySelector("#dashboard").hidden,
    identity: document.querySelector("#identity").dataset.identity,
    adminBadge: !document.querySelector("#admin-badge").hidden,
    workloadOptions: [...document.querySelectorAll("#workload option")].map((o) => o.value),
    groupByWorkloadVisible: !document.querySelector("#group-by option[value=workload]").hidden,
    totals: { ...document.querySelector("#total-cost").dataset, ...document.querySelector("#total-requests").dataset,
      ...document.querySelector("#total-input-tokens").dataset, ...document.querySelector("#total-output-tokens").dataset,
      ...document.querySelector("#total-cached-tokens").dataset },
    totalCostText: document.querySelector("#total-cost").textContent,
    spendChart: [...document.querySelectorAll("#spend-chart rect")].map((r) => ({ ...r.dataset })),
    tokensChart: [...document.querySelectorAll("#tokens-chart rect")].map((r) => ({ ...r.dataset })),
    errorsChart: [...document.querySelectorAll("#errors-chart rect")].map((r) => ({ ...r.dataset })),
    spendLegend: [...document.querySelectorAll("#spend-legend li")].map((li) => li.textContent),
    budgets: [...document.querySelectorAll("#budgets tbody tr")].map((tr) => tr.dataset.workload),
    loginError: document.querySelector("#login-error").hidden ? null : document.querySelector("#login-error").textContent,
    pageError: document.querySelector("#page-error").hidden ? null : document.querySelector("#page-error").textContent,
    storedBearer: sessionStorage.getItem("sidecar.bearer"),
    localStorageKeys: Object.keys(localStorage),
    rowsInDom: document.querySelectorAll("#generations tbody tr, #budgets tbody tr, svg rect").length,
  }));
  const openRow = async (id) => {
    await page.click(`#generations tr[data-generation-id="${id}"] button.link`);
    await page.waitForFunction(() => document.querySelector("#generation-dialog").open);
    const opened = await page.$eval("#generation-json", (pre) => ({ ...pre.dataset, json: JSON.parse(pre.textContent) }));
    await page.click("#generation-close");
    await page.waitForFunction(() => !document.querySelector("#generation-dialog").open);
    return opened;
  };
  const logIn = async (token) => {
    await page.fill("#bearer", token);
    await page.click("#login-form button[type=submit]");
  };
  // The scenario's fixed UTC range, the one /v1/report is asked for.
  const customRange = async () => {
    await page.selectOption("#period", "custom");
    await ready();
    await page.fill("#start-date", scenario.start_date);
    await page.fill("#end-date", scenario.end_date);
    await page.selectOption("#date-part", "day");
    await ready();
    await page.click("#controls button[type=submit]");
    await ready();
  };

  await page.goto(`${scenario.url}/ui`);
  result.finalUrl = page.url();
  await page.waitForFunction(() => document.body.dataset.state === "login");

  // 1. A wrong bearer: the login error, nothing else.
  await logIn(scenario.wrong_token);
  await page.waitForFunction(() => !document.querySelector("#login-error").hidden);
  result.wrong = await seen();
  result.wrongMarker = events.badResponses.length; // responses before this index belong to the wrong bearer

  // 2. The admin bearer: every workload.
  await logIn(scenario.admin_token);
  await ready();
  await customRange();
  result.admin = await seen();
  result.admin.rows = await rows();
  await page.selectOption("#group-by", "workload");
  await ready();
  result.admin.byWorkload = await seen();
  await page.selectOption("#group-by", "model");
  await ready();

  await page.selectOption("#filter-status", "error");
  await tableReady();
  result.admin.errorRows = await rows();
  await page.selectOption("#filter-status", "");
  await tableReady();
  await page.fill("#filter-model", scenario.model);
  await page.click("#generation-filters button[type=submit]");
  await tableReady();
  result.admin.modelRows = await rows();
  await page.fill("#filter-model", "");
  await page.click("#generation-filters button[type=submit]");
  await tableReady();

  result.admin.opened = await openRow(scenario.admin_open_id);
  result.admin.openedOther = await openRow(scenario.plain_open_id);
  // Two live polls, for requests per second.
  await page.waitForFunction(() => document.querySelector("#live-rps").dataset.rps !== "", null, { timeout: 8000 });
  result.admin.live = await page.evaluate(() => ({
    inFlight: document.querySelector("#live-in-flight").dataset.inFlight,
    rps: document.querySelector("#live-rps").dataset.rps,
    requestsTotal: document.querySelector("#live-requests").dataset.requestsTotal,
  }));
  await page.screenshot({ path: scenario.screenshot, fullPage: true });

  await page.click("#logout");
  await page.waitForFunction(() => document.body.dataset.state === "login");
  result.afterLogout = await seen();

  // 3. The plain bearer: only its own workload.
  await logIn(scenario.plain_token);
  await ready();
  await customRange();
  result.plain = await seen();
  result.plain.rows = await rows();
  result.plain.opened = await openRow(scenario.plain_open_id);
  // The other periods and keys draw without an error; the last 24 hours hold every seeded generation.
  await page.selectOption("#period", "24h");
  await ready();
  result.plain.last24h = await seen();
  for (const key of ["user", "tag", "provider"]) {
    await page.selectOption("#group-by", key);
    await ready();
    result.plain[`by_${key}`] = (await seen()).spendLegend;
  }
  await page.selectOption("#period", "30d");
  await ready();
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error?.stack ?? error);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
