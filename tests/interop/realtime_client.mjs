/**
 * Interop driver: the UNMODIFIED real client `@ai-sdk/gateway` (4.0.146) against a server that speaks the AI Gateway
 * realtime protocol, under `node --experimental-websocket` (Node 20's global, undici-based WebSocket). It prints what
 * the client and the sockets did, one JSON object per step.
 *
 * Input: one JSON scenario, as the first argument or on stdin
 *   { baseURL, apiKey, steps: [ { name, op, ... } ] }
 * Steps run in order; a later step refers to an earlier one by its `name`:
 *   { op: "getToken", model, expiresAfterSeconds? }
 *       gateway.experimental_realtime.getToken() — the server-side mint (there is no `window` here).
 *       value: { token, url, expiresAt } plus `webSocketConfig`, what the realtime model's getWebSocketConfig()
 *       builds for that token (the protocols `ai`'s browser transport would offer).
 *   { op: "browserSocket", tokenFrom, send, until?, timeoutMs? }
 *       new WebSocket(<url of step tokenFrom>, getGatewayRealtimeProtocols(<its token>)), exactly as a browser does.
 *   { op: "serverSocket", model, intent?, send, until?, timeoutMs? }
 *       gateway.experimental_realtime(model).getServerWebSocketConfig({intent}) → new WebSocket(url,
 *       {headers}) (undici's WebSocketInit: no subprotocols, auth in the headers).
 *   { op: "getGenerationInfo", id? , idFrom? }  id, or the `generationId` of the last response-done of step idFrom.
 * A socket step's `send` is { open: [events], <server event type>: [events], ... }: the events sent when the socket
 * opens and the first time a server event of that type arrives. The step ends (client close 1000) when an event of
 * type `until` arrives, when the socket closes, shortly after an `error` before it opened (Node 20's undici fires no
 * `close` then), or after timeoutMs (default 10000).
 *
 * Output, one line per step:
 *   { step, op, ok: true, value, requests }     value for sockets: { url, protocols?, headerNames?, authorization?,
 *                                               opened, protocol, events, sentTypes, error, close, timedOut,
 *                                               readyState (when the step ended) }
 *   { step, op, ok: false, error: { name, type, statusCode, message, isRetryable }, requests }    the call threw
 * `requests` lists the HTTP requests the provider made ({ method, url, status }), seen through its `fetch` setting.
 * A socket step is ok whenever the driver could run it: whether the socket opened is in the value.
 *
 * Exit status is 0 whenever the driver itself worked, whatever the client did; non-zero means the driver broke.
 */
import { readFileSync } from "node:fs";
import { createGateway, getGatewayRealtimeProtocols } from "@ai-sdk/gateway";

if (typeof WebSocket !== "function") {
	throw new Error("no global WebSocket: run this driver with `node --experimental-websocket` (Node 20)");
}

const scenario = JSON.parse(process.argv[2] ?? readFileSync(0, "utf8"));

let requests = [];
const recordingFetch = async (input, init) => {
	const url = input instanceof Request ? input.url : String(input);
	const entry = { method: init?.method ?? (input instanceof Request ? input.method : "GET"), url, status: null };
	requests.push(entry);
	const response = await fetch(input, init);
	entry.status = response.status;
	return response;
};

const gateway = createGateway({ baseURL: scenario.baseURL, apiKey: scenario.apiKey, fetch: recordingFetch });
const results = new Map();
const CLOSE_GRACE_MS = 1000;

function lastGenerationId(name) {
	const events = results.get(name)?.events ?? [];
	const done = events.filter((event) => event.type === "response-done");
	const id = done.at(-1)?.generationId;
	if (typeof id !== "string") {
		throw new Error(`step ${JSON.stringify(name)} saw no response-done with a generationId`);
	}
	return id;
}

/** Open `new WebSocket(url, second)` and run the `send` script; resolve with what happened, never reject. */
function runSocket(url, second, step) {
	const send = step.send ?? {};
	const until = step.until ?? null;
	const timeoutMs = step.timeoutMs ?? 10000;
	const out = { opened: false, protocol: null, events: [], sentTypes: [], error: null, close: null, timedOut: false };
	return new Promise((resolve) => {
		const ws = new WebSocket(url, second);
		const fired = new Set();
		let finished = false;
		const finish = () => {
			if (!finished) {
				finished = true;
				out.readyState = ws.readyState;
				clearTimeout(timer);
				resolve(out);
			}
		};
		const timer = setTimeout(() => {
			out.timedOut = true;
			try {
				ws.close(1000, "driver timeout");
			} catch {}
			setTimeout(finish, 1000);
		}, timeoutMs);
		const emit = (trigger) => {
			if (fired.has(trigger) || !(trigger in send)) {
				return;
			}
			fired.add(trigger);
			for (const event of send[trigger]) {
				ws.send(JSON.stringify(event));
				out.sentTypes.push(event.type);
			}
		};
		ws.addEventListener("open", () => {
			out.opened = true;
			out.protocol = ws.protocol;
			emit("open");
		});
		ws.addEventListener("message", (message) => {
			let event;
			try {
				event = JSON.parse(String(message.data));
			} catch {
				event = { type: "<not json>", data: String(message.data) };
			}
			out.events.push(event);
			emit(event.type);
			if (event.type === until) {
				ws.close(1000, "done");
			}
		});
		ws.addEventListener("error", (error) => {
			out.error = { type: error.type, message: error.message ?? String(error.error ?? "") };
			if (!out.opened) {
				// The spec fires `close` (1006) after a failed handshake; Node 20's undici (6.x) fires only `error` and
				// leaves readyState at CONNECTING (nodejs/undici#3546; its fix #3566 is not in undici 6.24.1). Wait
				// briefly for a close, then report what happened.
				setTimeout(finish, CLOSE_GRACE_MS);
			}
		});
		ws.addEventListener("close", (close) => {
			out.close = { code: close.code, reason: close.reason, wasClean: close.wasClean };
			finish();
		});
	});
}

const ops = {
	getToken: async (step) => {
		const minted = await gateway.experimental_realtime.getToken({
			model: step.model,
			...(step.expiresAfterSeconds != null && { expiresAfterSeconds: step.expiresAfterSeconds }),
		});
		const model = gateway.experimental_realtime(step.model);
		return { ...minted, webSocketConfig: model.getWebSocketConfig({ token: minted.token, url: minted.url }) };
	},
	browserSocket: async (step) => {
		const minted = results.get(step.tokenFrom);
		if (minted?.token === undefined) {
			throw new Error(`no minted token in step ${JSON.stringify(step.tokenFrom)}`);
		}
		const protocols = getGatewayRealtimeProtocols(minted.token);
		return { url: minted.url, protocols, ...(await runSocket(minted.url, protocols, step)) };
	},
	serverSocket: async (step) => {
		const model = gateway.experimental_realtime(step.model);
		const config = await model.getServerWebSocketConfig({ intent: step.intent ?? "conversation" });
		const headerNames = Object.keys(config.headers).sort();
		const authorization = config.headers.authorization ?? config.headers.Authorization ?? null;
		const socket = await runSocket(config.url, { headers: config.headers }, step);
		return { url: config.url, headerNames, authorization, ...socket };
	},
	getGenerationInfo: (step) => gateway.getGenerationInfo({ id: step.id ?? lastGenerationId(step.idFrom) }),
};

for (const step of scenario.steps) {
	const op = ops[step.op];
	if (op === undefined) {
		throw new Error(`unknown op ${JSON.stringify(step.op)}`);
	}
	requests = [];
	let line;
	try {
		const value = await op(step);
		results.set(step.name, value);
		line = { step: step.name, op: step.op, ok: true, value };
	} catch (error) {
		const { name, type, statusCode, message, isRetryable } = error ?? {};
		line = { step: step.name, op: step.op, ok: false, error: { name, type, statusCode, message, isRetryable } };
	}
	line.requests = requests;
	process.stdout.write(`${JSON.stringify(line)}\n`);
}
