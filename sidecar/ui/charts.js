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
export function stackedBars(svg, legend, { periods, points, format, periodLabel, whole = false }) {
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
