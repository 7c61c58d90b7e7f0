// Drives the /ui page in Debian's Chromium (playwright-core, executablePath /usr/bin/chromium: no downloaded
// browser) and prints one JSON object of what it saw; test_spend_page.py judges it. Scenario on stdin:
// {url, chromium, screenshot, wrong_token, admin_token, plain_token, start_date, end_date, model, admin_open_id, plain_open_id,
//  proxies: [{name, url, screenshot?}]}: each url is the sidecar behind a path-prefix reverse proxy (http://…/team-a).

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

// Everything a page reports that a test may judge: console errors and warnings, uncaught errors, failed requests,
// responses >= 400, and every request made (with its Authorization header, to prove the bearer stays in it).
function watch(page, into) {
  page.on("console", (message) => {
    if (message.type() === "error" || message.type() === "warning") {
      into.console.push({ type: message.type(), text: message.text(), url: message.location().url });
    }
  });
  page.on("pageerror", (error) => into.pageErrors.push(String(error)));
  page.on("requestfailed", (request) => {
    into.requestFailed.push({ url: request.url(), error: request.failure()?.errorText });
  });
  page.on("request", (request) => {
    const authorization = request.headers().authorization ?? null;
    into.requests.push({ url: request.url(), method: request.method(), authorization });
  });
  page.on("response", (response) => {
    if (response.status() >= 400) into.badResponses.push({ url: response.url(), status: response.status() });
  });
}

// What each chart shows, in the page: its bars, legend, text summary (the svg's aria-describedby) and its table.
// Runs in the page (page.evaluate), so it is one self-contained function.
function chartsInPage(ids) {
  const chartData = (id) => {
    const table = document.querySelector(`#${id}-table`);
    const summary = document.querySelector(`#${id}-summary`);
    const numbers = (selector) => [...table.querySelectorAll(selector)]
      .map((cell) => ({ ...cell.dataset, text: cell.textContent }));
    return {
      rects: [...document.querySelectorAll(`#${id}-chart rect`)]
        .map((r) => ({ ...r.dataset, title: r.querySelector("title").textContent })),
      summary: { text: summary.textContent, total: summary.dataset.total, largest: summary.dataset.largest },
      describedBy: document.querySelector(`#${id}-chart`).getAttribute("aria-describedby"),
      table: {
        open: table.closest("details").open,
        caption: table.caption?.textContent ?? null,
        columns: [...table.querySelectorAll("thead th")].map((th) => th.textContent),
        periods: [...table.querySelectorAll("tbody tr")].map((tr) => tr.dataset.period),
        cells: numbers("tbody td[data-key]"),
        rowTotals: numbers("tbody td[data-total]"),
        keyTotals: numbers("tfoot td[data-key]"),
        total: numbers("tfoot td[data-total]:not([data-key])")[0] ?? null,
      },
    };
  };
  return Object.fromEntries(ids.map((id) => [id, chartData(id)]));
}

// What Chromium's accessibility tree says each chart is (CDP: the tree a screen reader reads), not what the DOM
// attributes hope it says: role, accessible name and accessible description.
async function accessibleCharts(page) {
  const cdp = await page.context().newCDPSession(page);
  try {
    const { root } = await cdp.send("DOM.getDocument", { depth: 0 });
    const found = {};
    for (const id of ["spend-chart", "tokens-chart", "errors-chart", "live-chart"]) {
      const { nodeId } = await cdp.send("DOM.querySelector", { nodeId: root.nodeId, selector: `#${id}` });
      const { nodes } = await cdp.send("Accessibility.getPartialAXTree", { nodeId, fetchRelatives: false });
      const node = nodes[0];
      found[id] = { role: node.role?.value, name: node.name?.value, description: node.description?.value ?? null,
        ignored: node.ignored };
    }
    return found;
  } finally {
    await cdp.detach();
  }
}

// The steps every scenario takes on one page.
function helpersFor(page) {
  const ready = () => page.waitForFunction(() => document.body.dataset.state === "ready");
  const tableReady = () => page.waitForFunction(() => document.querySelector("#generations").dataset.state === "ready");
  const rows = () => page.$$eval("#generations tbody tr", (trs) => trs.map((tr) => ({ ...tr.dataset })));
  const seen = async () => ({
    ...(await page.evaluate(() => ({
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
      rowsInDom: document.querySelectorAll("#generations tbody tr, #budgets tbody tr, svg rect, .chart-table tr").length,
      summariesText: [...document.querySelectorAll(".chart-summary")].map((p) => p.textContent).join(""),
    }))),
    charts: await page.evaluate(chartsInPage, ["spend", "tokens", "errors"]),
  });
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
  return { ready, tableReady, rows, seen, openRow, logIn, customRange };
}

const browser = await chromium.launch({ executablePath: scenario.chromium, headless: true, args: FLAGS });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  watch(page, events);
  const { ready, tableReady, rows, seen, openRow, logIn, customRange } = helpersFor(page);

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
  // The spend chart's table, opened from the keyboard: Tab from the Refresh button (the next stop is the first
  // chart's "Show as table"), then Enter.
  await page.focus("#controls button[type=submit]");
  await page.keyboard.press("Tab");
  result.admin.tabbedTo = await page.evaluate(() => {
    const focused = document.activeElement;
    if (focused.tagName !== "SUMMARY") return focused.outerHTML;
    return `${focused.textContent} → #${focused.parentElement.querySelector("table").id}`;
  });
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelector("#spend-table").closest("details").open);
  result.admin.opened_table = (await seen()).charts;
  result.admin.accessible = await accessibleCharts(page);
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
  result.plain.last30d = await seen();

  // 4. Behind path-prefix reverse proxies (…/team-a/ → the sidecar's /; …/team-b/ → the sidecar's path_prefix): a
  // fresh tab opens <prefix>/ui, without the trailing slash, so the relative redirect is taken too; the test checks
  // that every request the page made stayed under the prefix.
  result.proxied = {};
  for (const proxy of scenario.proxies) {
    const proxied = { console: [], pageErrors: [], requestFailed: [], badResponses: [], requests: [] };
    result.proxied[proxy.name] = { events: proxied }; // what went wrong, should a step below time out
    const proxyContext = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    proxyContext.setDefaultTimeout(TIMEOUT);
    const proxyPage = await proxyContext.newPage();
    watch(proxyPage, proxied);
    const behind = helpersFor(proxyPage);
    await proxyPage.goto(`${proxy.url}/ui`);
    const finalUrl = proxyPage.url();
    await proxyPage.waitForFunction(() => document.body.dataset.state === "login");
    await behind.logIn(scenario.plain_token);
    await behind.ready();
    await behind.customRange();
    const shown = await behind.seen();
    const opened = await behind.openRow(scenario.plain_open_id); // ../v1/generation, through the prefix
    if (proxy.screenshot) {
      await proxyPage.locator("details:has(#errors-table) > summary").click();
      await proxyPage.screenshot({ path: proxy.screenshot, fullPage: true });
    }
    await proxyContext.close();
    Object.assign(result.proxied[proxy.name], { ...shown, finalUrl, opened });
  }
  result.ok = true;
} catch (error) {
  result.ok = false;
  result.error = String(error?.stack ?? error);
} finally {
  await browser.close();
}
process.stdout.write(`${JSON.stringify(result)}\n`);
