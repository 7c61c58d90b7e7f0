// Numbers and times as the page shows them; raw values stay in data-* attributes for scripts and tests.

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

export function usd(value) {
  const number = Number(value) || 0;
  if (number === 0) return "$0";
  const digits = Math.abs(number) >= 1 ? 2 : Math.abs(number) >= 0.01 ? 4 : 6;
  return `$${number.toFixed(digits)}`;
}

export function count(value) {
  return integer.format(Number(value) || 0);
}

export function ms(value) {
  if (value === null || value === undefined) return "–";
  const number = Number(value);
  return number >= 1000 ? `${(number / 1000).toFixed(2)} s` : `${Math.round(number)} ms`;
}

export function when(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 19);
}

export function duration(seconds) {
  const s = Math.floor(Number(seconds) || 0);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  return d ? `${d}d ${h}h` : h ? `${h}h ${m}m` : `${m}m ${s % 60}s`;
}

// A UTC calendar day as YYYY-MM-DD.
export function day(date) {
  return date.toISOString().slice(0, 10);
}
