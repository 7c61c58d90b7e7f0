/**
 * Interop driver: OpenAI's own UNMODIFIED realtime clients against a server that speaks OpenAI's realtime contract.
 * `openai` (7.59.0) mints client secrets and opens sockets with `openai/realtime/ws` (`ws` package, auth in the
 * Authorization header) or `openai/realtime/websocket` (the global WebSocket, auth in the `realtime` +
 * `openai-insecure-api-key.<key>` subprotocols); `@openai/agents-realtime` (0.20.0) runs a RealtimeSession over its
 * WebSocket transport (in Node: `ws`, Authorization header). Run it under `node --experimental-websocket` (Node 20's
 * global, undici-based WebSocket, for `openai/realtime/websocket`). It prints what the clients did, one JSON object
 * per step.
 *
 * Input: one JSON scenario, as the first argument or on stdin: { steps: [ { name, op, ... } ] }.
 * Steps run in order; a later step refers to an earlier mint by its `name` (`secretFrom`: use its `value`).
 *   { op: "mint", baseURL, apiKey, body? }
 *       new OpenAI({ baseURL, apiKey }).realtime.clientSecrets.create(body) → value: the parsed response.
 *   { op: "agentsSession", url, apiKey? | secretFrom, model, instructions?, config?, text, timeoutMs? }
 *       new RealtimeSession(new RealtimeAgent({ name, instructions }), { transport: "websocket", model, config })
 *       .connect({ apiKey, url }), then session.sendMessage(text); ends at the first `response.done` (or error,
 *       close, timeout) with session.close().
 *       value: { url, connected, connectError, upgrade: { status, protocol }, serverEvents, sessionEvents, text,
 *       history, errors, close, timedOut }
 *   { op: "openaiWs", transport: "ws" | "websocket", baseURL, apiKey? | secretFrom, model, text, timeoutMs? }
 *       new OpenAIRealtimeWS({ model }, client) or new OpenAIRealtimeWebSocket({ model }, client) with
 *       client = new OpenAI({ baseURL, apiKey }); once the socket opens it sends conversation.item.create and
 *       response.create, and closes (1000) at the first `response.done` (or error, close, timeout).
 *       value: { url, opened, protocol, events, sentTypes, errors, close, timedOut }
 * Output, one line per step:
 *   { step, op, ok: true, value, requests }
 *   { step, op, ok: false, error: { class, name, status, type, code, param, message }, requests }    the call threw
 * `requests` lists the HTTP requests made during the step ({ method, url, status }): the openai client's, through its
 * `fetch` option, and any other through the global fetch.
 * A socket step is ok whenever the driver could run it: whether the client connected is in the value.
 *
 * Exit status is 0 whenever the driver itself worked, whatever the clients did; non-zero means the driver broke.
 */
import { readFileSync } from "node:fs";
import { RealtimeAgent, RealtimeSession } from "@openai/agents-realtime";
import OpenAI from "openai";
import { OpenAIRealtimeWebSocket } from "openai/realtime/websocket";
import { OpenAIRealtimeWS } from "openai/realtime/ws";

const scenario = JSON.parse(process.argv[2] ?? readFileSync(0, "utf8"));
const CLOSE_GRACE_MS = 1000;
const DEFAULT_TIMEOUT_MS = 10000;

let requests = [];
const platformFetch = globalThis.fetch;
const recordingFetch = async (input, init) => {
	const url = input instanceof Request ? input.url : String(input);
	const entry = { method: init?.method ?? (input instanceof Request ? input.method : "GET"), url, status: null };
	requests.push(entry);
	const response = await platformFetch(input, init);
	entry.status = response.status;
	return response;
};
// The openai client gets it as its `fetch` option; the global one records whatever else calls fetch (the agents
// SDK accepts no fetch option, and would export traces with it).
globalThis.fetch = recordingFetch;

const results = new Map();

function client(step) {
	return new OpenAI({ baseURL: step.baseURL, apiKey: apiKeyOf(step), fetch: recordingFetch, maxRetries: 0 });
}

function apiKeyOf(step) {
	if (step.secretFrom === undefined) {
		return step.apiKey;
	}
	const value = results.get(step.secretFrom)?.value;
	if (typeof value !== "string") {
		throw new Error(`step ${JSON.stringify(step.secretFrom)} minted no secret`);
	}
	return value;
}

/** What a thrown error or an error event says; `class` is the SDK's error class (AuthenticationError, …). */
function describe(error) {
	const { name, status, type, code, param, message } = error ?? {};
	return { class: error?.constructor?.name, name, status, type, code, param, message: message ?? String(error) };
}

/**
 * How a socket step ends: `finish()` resolves with `out` at once; `soon()` resolves after CLOSE_GRACE_MS unless
 * `finish()` comes first; after `timeoutMs` it sets `out.timedOut` and calls `onTimeout`. No timer outlives the step.
 */
function stepEnd(out, resolve, timeoutMs, onTimeout) {
	let finished = false;
	let grace = null;
	const deadline = setTimeout(() => {
		out.timedOut = true;
		onTimeout();
	}, timeoutMs);
	const finish = () => {
		if (!finished) {
			finished = true;
			clearTimeout(grace);
			clearTimeout(deadline);
			resolve(out);
		}
	};
	const soon = () => {
		if (grace === null) {
			grace = setTimeout(finish, CLOSE_GRACE_MS);
		}
	};
	return { finish, soon };
}

function agentsSession(step) {
	const apiKey = apiKeyOf(step);
	const agent = new RealtimeAgent({ name: "interop", instructions: step.instructions });
	const session = new RealtimeSession(agent, { transport: "websocket", model: step.model, config: step.config });
	const transport = session.transport;
	const out = {
		url: step.url,
		connected: false,
		connectError: null,
		upgrade: null,
		serverEvents: [],
		sessionEvents: [],
		text: "",
		history: [],
		errors: [],
		close: null,
		timedOut: false,
	};
	return new Promise((resolve) => {
		let ending = false;
		const end = () => {
			if (ending) {
				return;
			}
			ending = true;
			out.history = session.history;
			try {
				session.close();
			} catch (error) {
				out.errors.push(describe(error));
			}
			if (out.close === null) {
				done.soon(); // the close handshake is under way; its `close` finishes the step
			} else {
				done.finish();
			}
		};
		const done = stepEnd(out, resolve, step.timeoutMs ?? DEFAULT_TIMEOUT_MS, end);
		transport.on("connection_change", (status) => {
			out.sessionEvents.push(`connection_change:${status}`);
			const ws = transport.connectionState.websocket;
			if (status === "connecting" && ws !== undefined) {
				// The transport's socket is the `ws` package's (Node): its upgrade response and close code.
				ws.on("upgrade", (response) => {
					out.upgrade = { status: response.statusCode, protocol: response.headers["sec-websocket-protocol"] ?? null };
				});
				ws.on("close", (code, reason) => {
					out.close = { code, reason: reason.toString() };
					if (ending) {
						done.finish();
					}
				});
			}
		});
		transport.on("*", (event) => {
			out.serverEvents.push(event);
			if (event.type === "response.output_text.delta") {
				out.text += event.delta;
			}
			if (event.type === "response.done") {
				end();
			}
		});
		transport.on("disconnected", () => {
			if (out.connected) {
				end(); // the server closed the session (a refused connect ends in connect()'s rejection)
			}
		});
		for (const name of ["agent_start", "agent_end", "history_added", "audio_start", "audio_stopped"]) {
			session.on(name, () => out.sessionEvents.push(name));
		}
		session.on("error", (event) => {
			out.errors.push(describe(event.error?.error ?? event.error));
		});
		session
			.connect({ apiKey, url: step.url })
			.then(() => {
				out.connected = true;
				session.sendMessage(step.text);
			})
			.catch((error) => {
				out.connectError = describe(error.error ?? error);
				end();
			});
	});
}

function openaiWs(step) {
	const Socket = { ws: OpenAIRealtimeWS, websocket: OpenAIRealtimeWebSocket }[step.transport];
	if (Socket === undefined) {
		throw new Error(`unknown transport ${JSON.stringify(step.transport)}`);
	}
	const rt = new Socket({ model: step.model }, client(step));
	const out = {
		url: rt.url.toString(),
		opened: false,
		protocol: null,
		events: [],
		sentTypes: [],
		errors: [],
		close: null,
		timedOut: false,
	};
	const send = (event) => {
		rt.send(event);
		out.sentTypes.push(event.type);
	};
	return new Promise((resolve) => {
		const done = stepEnd(out, resolve, step.timeoutMs ?? DEFAULT_TIMEOUT_MS, () => {
			rt.close({ code: 1000, reason: "driver timeout" });
			done.soon();
		});
		rt.on("error", (error) => {
			out.errors.push(describe(error));
			if (!out.opened) {
				// Node 20's undici fires no `close` after a refused handshake (nodejs/undici#3546).
				done.soon();
			}
		});
		rt.on("event", (event) => {
			out.events.push(event);
			if (event.type === "response.done") {
				rt.close({ code: 1000, reason: "done" });
			}
		});
		rt.socket.addEventListener("open", () => {
			out.opened = true;
			out.protocol = rt.socket.protocol;
			send({
				type: "conversation.item.create",
				item: { type: "message", role: "user", content: [{ type: "input_text", text: step.text }] },
			});
			send({ type: "response.create" });
		});
		rt.socket.addEventListener("close", (event) => {
			out.close = { code: event.code, reason: String(event.reason) };
			done.finish();
		});
	});
}

const ops = {
	mint: (step) => client(step).realtime.clientSecrets.create(step.body ?? {}),
	agentsSession,
	openaiWs,
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
		line = { step: step.name, op: step.op, ok: false, error: describe(error) };
	}
	line.requests = requests;
	process.stdout.write(`${JSON.stringify(line)}\n`);
}
