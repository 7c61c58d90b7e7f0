/**
 * Interop driver: runs the UNMODIFIED real client `@ai-sdk/gateway` (4.0.146, under Node >= 20) against a server
 * that speaks the AI Gateway account endpoints, and reports what the client returned, one JSON object per line.
 *
 * Input: one JSON scenario, as the first argument or on stdin
 *   { baseURL, apiKey,
 *     calls: [ { op: "getGenerationInfo", id } | { op: "getCredits" } | { op: "getSpendReport", params: {...} } ] }
 *
 * Output: for each call, in order, one line
 *   { ok: true, value, requests }                                              the call resolved to `value`
 *   { ok: false, error: { name, type, statusCode, message, isRetryable }, requests }   the call threw
 * `requests` lists the HTTP requests the client made for that call ({ method, url, status }); the driver observes
 * them through the provider's documented `fetch` setting, which only wraps the global fetch.
 *
 * Exit status is 0 whenever the driver itself worked, whatever the client did; non-zero means the driver broke.
 */
import { readFileSync } from "node:fs";
import { createGateway } from "@ai-sdk/gateway";

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

const ops = {
	getGenerationInfo: (call) => gateway.getGenerationInfo({ id: call.id }),
	getCredits: () => gateway.getCredits(),
	getSpendReport: (call) => gateway.getSpendReport(call.params),
};

for (const call of scenario.calls) {
	const op = ops[call.op];
	if (op === undefined) {
		throw new Error(`unknown op ${JSON.stringify(call.op)}`);
	}
	requests = [];
	let line;
	try {
		line = { ok: true, value: await op(call) };
	} catch (error) {
		const { name, type, statusCode, message, isRetryable } = error ?? {};
		line = { ok: false, error: { name, type, statusCode, message, isRetryable } };
	}
	line.requests = requests;
	process.stdout.write(`${JSON.stringify(line)}\n`);
}
