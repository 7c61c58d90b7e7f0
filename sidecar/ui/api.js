// The bearer and every request the page makes. The bearer lives in sessionStorage only (gone when the tab closes;
// never in localStorage, never in a URL) and travels in the Authorization header.

const BEARER_KEY = "sidecar.bearer";

export class Unauthorized extends Error {}

export function storedBearer() {
  return sessionStorage.getItem(BEARER_KEY);
}

export function storeBearer(bearer) {
  sessionStorage.setItem(BEARER_KEY, bearer);
}

export function forgetBearer() {
  sessionStorage.removeItem(BEARER_KEY);
}

// Relative to the page (/ui/ or <path_prefix>/ui/), so a path prefix keeps working.
const UI_API = new URL("api/", document.baseURI);
const ORIGIN_V1 = new URL("../v1/", document.baseURI);

function withQuery(url, params) {
  for (const [name, value] of Object.entries(params ?? {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  return url;
}

async function getJson(url, bearer) {
  const response = await fetch(url, {
    headers: { authorization: `Bearer ${bearer}`, accept: "application/json" },
    cache: "no-store",
    credentials: "omit",
  });
  if (response.status === 401) throw new Unauthorized("the bearer was not accepted");
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const error = body?.error;
    const message = typeof error === "string" ? error : error?.message ?? `HTTP ${response.status}`;
    throw new Error(`${url.pathname}: ${message}`);
  }
  return body;
}

// `GET <page>/api/<name>?…` with the stored bearer (or the one being tried at login).
export function uiApi(name, params, bearer = storedBearer()) {
  return getJson(withQuery(new URL(name, UI_API), params), bearer);
}

// The AI Gateway endpoints (`/v1/generation`, `/v1/report`) beside the page.
export function gatewayApi(name, params, bearer = storedBearer()) {
  return getJson(withQuery(new URL(name, ORIGIN_V1), params), bearer);
}
