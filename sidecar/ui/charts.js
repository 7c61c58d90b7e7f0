// Charts drawn as SVG from the data: no library, nothing to vendor, and every bar segment carries its raw value
// (data-value, data-key, data-period), so what the chart shows can be read back and checked.

const SVG_NS = "http://www.w3.org/2000/svg";
const WIDTH = 800;
const HEIGHT = 240;
const MARGIN = { top: 12, right: 12, bottom: 40, left: 72 };
const MAX_SERIES = 8; // more keys than this are drawn as one "other" series, so colours stay tellable apart
export const PALETTE = ["#2563eb", "#f97316", "#16a34a", "#dc2626", "#9333ea", "#0891b2", "#ca8a04", "#db2777", "#64748b"];

function svgElement(name, attributes = {}, text = undefined) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [attribute, value] of Object.entries(attributes)) element.setAttribute(attribute, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

function niceMax(value) {
  if (value <= 0) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * magnitude >= value) return step * magnitude;
  return 10 * magnitude;
}

// The keys to draw, largest first: at most MAX_SERIES, the rest folded into "other".
function seriesKeys(points) {
  const totals = new Map();
  for (const point of points) totals.set(point.key, (totals.get(point.key) ?? 0) + point.value);
  const keys = [...totals.entries()].sort((a, b) => b[1] - a[1]).map(([key]) => key);
  if (keys.length <= MAX_SERIES) return { keys, fold: (key) => key };
  const kept = new Set(keys.slice(0, MAX_SERIES - 1));
  return { keys: [...kept, "other"], fold: (key) => (kept.has(key) ? key : "other") };
}

// Draw `points` ([{period, key, value}]) as bars over `periods` (the x axis, in order), stacked by key.
// `legend` is a <ul> filled with one item per key; `format` turns a value into text (axis, tooltips).
// `whole` marks counts: the axis then steps by whole numbers.
// A picture says nothing to a screen reader, so the same numbers are also written out: `summary` (the svg's
// aria-describedby target) gets one sentence, and `table` the whole chart as rows of periods and columns of keys
// (`caption` names it; `unit` names what a count counts in the sentence: "12 errors").
export function stackedBars(svg, legend, { periods, points, format, periodLabel, whole = false, summary, table, caption,
  unit = "" }) {
  svg.replaceChildren();
  legend.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
  const { keys, fold } = seriesKeys(points);
  const colour = new Map(keys.map((key, i) => [key, PALETTE[i % PALETTE.length]]));
  const stacks = new Map(periods.map((period) => [period, new Map()]));
  for (const point of points) {
    if (!stacks.has(point.period)) stacks.set(point.period, new Map());
    const stack = stacks.get(point.period);
    const key = fold(point.key);
    stack.set(key, (stack.get(key) ?? 0) + point.value);
  }
  const columns = [...stacks.keys()].sort();
  const heights = columns.map((period) => [...stacks.get(period).values()].reduce((a, b) => a + b, 0));
  const highest = Math.max(0, ...heights);
  const top = whole ? Math.max(4, Math.ceil(niceMax(highest) / 4) * 4) : niceMax(highest);
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right;
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const y = (value) => MARGIN.top + plotHeight - (value / top) * plotHeight;

  const axis = svgElement("g", { class: "axis" });
  for (let i = 0; i <= 4; i += 1) {
    const value = (top * i) / 4;
    axis.append(svgElement("line", { x1: MARGIN.left, x2: WIDTH - MARGIN.right, y1: y(value), y2: y(value) }));
    axis.append(svgElement("text", { x: MARGIN.left - 6, y: y(value) + 4, "text-anchor": "end" }, format(value)));
  }
  svg.append(axis);
  if (points.length === 0) {
    svg.append(svgElement("text", { x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "empty" }, "No data in this range"));
  }

  const slot = plotWidth / Math.max(columns.length, 1);
  const barWidth = Math.max(1, Math.min(48, slot * 0.7));
  const labelEvery = Math.ceil(columns.length / 12);
  const bars = svgElement("g", { class: "bars" });
  columns.forEach((period, index) => {
    const x = MARGIN.left + slot * index + (slot - barWidth) / 2;
    let base = 0;
    for (const key of keys) {
      const value = stacks.get(period).get(key);
      if (value === undefined) continue;
      const rect = svgElement("rect", {
        x,
        width: barWidth,
        y: y(base + value),
        height: Math.max(0, y(base) - y(base + value)),
        fill: colour.get(key),
        "data-period": period,
        "data-key": key,
        "data-value": value,
      });
      rect.append(svgElement("title", {}, `${periodLabel(period)} · ${key}: ${format(value)}`));
      bars.append(rect);
      base += value;
    }
    if (index % labelEvery === 0) {
      const label = svgElement("text", { x: x + barWidth / 2, y: HEIGHT - MARGIN.bottom + 16, "text-anchor": "middle" });
      label.textContent = periodLabel(period);
      axis.append(label);
    }
  });
  svg.append(bars);

  for (const key of keys) {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.backgroundColor = colour.get(key); // CSSOM, which the page's style-src 'self' allows
    item.append(swatch, document.createTextNode(key));
    legend.append(item);
  }
  const data = { columns, keys, stacks, totals: heights, format, unit };
  if (summary) describeBars(summary, data);
  if (table) barsTable(table, { ...data, caption });
}

// A period as a row header: the whole date (and hour), where the axis has room for "11-21" only.
function periodName(period) {
  return period.length > 10 ? `${period.slice(0, 10)} ${period.slice(11, 16)} UTC` : period;
}

// One sentence: the total over the range and the largest key ("Total $12.34 over 7 days; largest:
// anthropic/claude-sonnet-4-5, $8.00"). Rewritten on every draw, so what a screen reader hears matches the bars.
function describeBars(summary, { columns, keys, stacks, totals, format, unit }) {
  const total = totals.reduce((a, b) => a + b, 0);
  const amount = (value) => (unit ? `${format(value)} ${unit}${value === 1 ? "" : "s"}` : format(value));
  const unitOfTime = columns.some((period) => period.length > 10) ? "hour" : "day";
  const span = `${columns.length} ${unitOfTime}${columns.length === 1 ? "" : "s"}`;
  // keys come largest first; when some are folded, "other" is last, so the first key is the largest single one.
  const largest = keys[0];
  const largestValue = [...stacks.values()].reduce((sum, stack) => sum + (stack.get(largest) ?? 0), 0);
  summary.textContent = `Total ${amount(total)} over ${span}` +
    (total > 0 ? `; largest: ${largest}, ${amount(largestValue)}.` : "; no data.");
  summary.dataset.total = String(total);
  summary.dataset.largest = total > 0 ? largest : "";
}

// The chart as a table: a row per period (the x axis, all of it), a column per key as drawn (with "other"), a
// total column, and a footer row of totals. Every number cell keeps its raw value in data-value, as the bars do.
function barsTable(table, { columns, keys, stacks, totals, format, caption }) {
  const numberCell = (value, attributes) => {
    const cell = document.createElement("td");
    cell.className = "num";
    cell.textContent = format(value);
    cell.dataset.value = String(value);
    for (const [name, given] of Object.entries(attributes)) cell.dataset[name] = given;
    return cell;
  };
  const header = (text, scope) => {
    const cell = document.createElement("th");
    cell.scope = scope;
    cell.textContent = text;
    return cell;
  };
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  headRow.append(header(columns.some((period) => period.length > 10) ? "Hour" : "Day", "col"));
  for (const key of keys) headRow.append(header(key, "col"));
  headRow.append(header("Total", "col"));
  for (const cell of [...headRow.children].slice(1)) cell.className = "num";
  head.append(headRow);

  const body = document.createElement("tbody");
  columns.forEach((period, index) => {
    const row = document.createElement("tr");
    row.dataset.period = period;
    row.append(header(periodName(period), "row"));
    for (const key of keys) row.append(numberCell(stacks.get(period).get(key) ?? 0, { key, period }));
    row.append(numberCell(totals[index], { period, total: "" }));
    body.append(row);
  });

  const foot = document.createElement("tfoot");
  const footRow = document.createElement("tr");
  footRow.append(header("Total", "row"));
  for (const key of keys) {
    const sum = columns.reduce((total, period) => total + (stacks.get(period).get(key) ?? 0), 0);
    footRow.append(numberCell(sum, { key, total: "" }));
  }
  footRow.append(numberCell(totals.reduce((a, b) => a + b, 0), { total: "" }));
  foot.append(footRow);

  const title = document.createElement("caption");
  title.textContent = caption ?? "";
  table.replaceChildren(title, head, body, foot);
}

// A line of the last `values` (oldest first), for the live view.
export function sparkline(svg, values) {
  svg.replaceChildren();
  const width = 300;
  const height = 60;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  if (values.length < 2) return;
  const top = niceMax(Math.max(...values));
  const step = width / (values.length - 1);
  const path = values.map((value, i) => `${i ? "L" : "M"}${(i * step).toFixed(1)},${(height - 2 - (value / top) * (height - 4)).toFixed(1)}`);
  svg.append(svgElement("path", { d: path.join(" "), class: "spark" }));
}
