/**
 * Interop driver: runs the UNMODIFIED AI SDK (`ai` generateText / streamText) with the UNMODIFIED provider packages
 * @ai-sdk/gateway, @ai-sdk/anthropic and @ai-sdk/openai (under Node >= 20) against the sidecar, and reports what the
 * SDK returned, one JSON object per line.
 *
 * Input: one JSON scenario on stdin: { calls: [call, ...] }, each call
 *   { client: "gateway" | "anthropic" | "openai" | "openai-chat" | "openai-responses", baseURL, apiKey,
 *     op: "streamText" | "generateText" | "getAvailableModels" | "getGenerationInfo",
 *     model, prompt?, system?, messages?, tools?: { <name>: { description, inputSchema } }, toolChoice?,
 *     reasoning?, maxOutputTokens?, providerOptions?, id? (getGenerationInfo),
 *     followUp?: { text?, toolResults?: { <toolName>: <json output> } } }
 * `followUp` runs a second step as an app would: the first step's response messages, then the tool results (as a
 * tool message) and/or a user message with `text`.
 *
 * Output, per call: { ok: true, value, requests } or { ok: false, error: {name, type, statusCode, message,
 * isRetryable, modelId}, streamErrors, requests }. For streamText, `value.parts` lists the fullStream parts the SDK
 * produced (type, id and providerMetadata) and `value.errors` what reached onError. `requests` lists { method, url,
 * status } of the HTTP calls, observed through each provider's documented `fetch` setting, which only wraps the
 * global fetch.
 *
 * Tools are defined with `tool({ inputSchema: jsonSchema(...) })` and no execute, so a turn that calls one ends on
 * tool-calls. maxRetries is 0 so that an error is reported at once. Exit status 0 whenever the driver itself worked.
 */
import { readFileSync } from "node:fs";
import { createAnthropic } from "@ai-sdk/anthropic";
import { createGateway } from "@ai-sdk/gateway";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";

const scenario = JSON.parse(readFileSync(0, "utf8"));

let requests = [];
const recordingFetch = async (input, init) => {
	const url = input instanceof Request ? input.url : String(input);
	const entry = { method: init?.method ?? (input instanceof Request ? input.method : "GET"), url, status: null };
	requests.push(entry);
	const response = await fetch(input, init);
	entry.status = response.status;
	return response;
};

function provider(call) {
	const settings = { baseURL: call.baseURL, apiKey: call.apiKey, fetch: recordingFetch };
	switch (call.client) {
		case "gateway":
			return createGateway(settings);
		case "anthropic":
			return createAnthropic(settings);
		case "openai":
		case "openai-chat":
		case "openai-responses":
			return createOpenAI(settings);
		default:
			throw new Error(`unknown client ${JSON.stringify(call.client)}`);
	}
}

function model(call) {
	const p = provider(call);
	if (call.client === "openai-chat") return p.chat(call.model);
	if (call.client === "openai-responses") return p.responses(call.model);
	return p(call.model); // the package's default: gateway language model, Anthropic Messages, OpenAI Responses
}

function tools(spec) {
	if (spec === undefined) return undefined;
	return Object.fromEntries(
		Object.entries(spec).map(([name, t]) => [
			name,
			tool({ description: t.description, inputSchema: jsonSchema(t.inputSchema) }),
		]),
	);
}

function callOptions(call, messages) {
	const options = { model: model(call), maxRetries: 0, tools: tools(call.tools) };
	for (const key of ["system", "toolChoice", "reasoning", "maxOutputTokens", "providerOptions", "temperature"]) {
		if (call[key] !== undefined) options[key] = call[key];
	}
	if (messages !== undefined) options.messages = messages;
	else if (call.messages !== undefined) options.messages = call.messages;
	else options.prompt = call.prompt;
	return options;
}

function summary(result) {
	return {
		text: result.text,
		reasoningText: result.reasoningText ?? null,
		reasoning: result.reasoning.map((r) => ({ text: r.text, providerMetadata: r.providerMetadata ?? null })),
		toolCalls: result.toolCalls.map((c) => ({ toolCallId: c.toolCallId, toolName: c.toolName, input: c.input })),
		content: result.content.map((c) => ({ type: c.type, providerMetadata: c.providerMetadata ?? null })),
		finishReason: result.finishReason,
		rawFinishReason: result.rawFinishReason ?? null,
		usage: result.usage,
		providerMetadata: result.providerMetadata ?? null,
		response: responseSummary(result.response),
		warnings: result.warnings ?? [],
	};
}

// The sidecar's x-generation-id response header, which the provider packages keep in response.headers: the test
// looks the generation up in the ledger with it.
function responseSummary(response) {
	return { id: response.id, modelId: response.modelId, generationId: response.headers?.["x-generation-id"] ?? null };
}

let streamErrors = [];

async function runStream(options) {
	const errors = [];
	streamErrors = errors;
	const parts = [];
	const result = streamText({ ...options, onError: ({ error }) => errors.push(describe(error)) });
	for await (const part of result.fullStream) {
		const seen = { type: part.type };
		if (part.id !== undefined) seen.id = part.id;
		if (part.providerMetadata !== undefined) seen.providerMetadata = part.providerMetadata;
		if (part.type === "error") seen.error = describe(part.error);
		parts.push(seen);
	}
	const value = {
		text: await result.text,
		reasoningText: (await result.reasoningText) ?? null,
		reasoning: (await result.reasoning).map((r) => ({ text: r.text, providerMetadata: r.providerMetadata ?? null })),
		toolCalls: (await result.toolCalls).map((c) => ({
			toolCallId: c.toolCallId,
			toolName: c.toolName,
			input: c.input,
		})),
		finishReason: await result.finishReason,
		rawFinishReason: (await result.rawFinishReason) ?? null,
		usage: await result.usage,
		providerMetadata: (await result.providerMetadata) ?? null,
		response: await result.response,
		warnings: (await result.warnings) ?? [],
		parts,
		errors,
	};
	const responseMessages = value.response.messages;
	value.response = responseSummary(value.response);
	return { value, responseMessages };
}

async function runGenerate(options) {
	const result = await generateText(options);
	return { value: summary(result), responseMessages: result.response.messages };
}

function followUpMessages(call, first, responseMessages) {
	const messages = [
		...(call.messages ?? [{ role: "user", content: call.prompt }]),
		...responseMessages,
	];
	const results = call.followUp.toolResults;
	if (results !== undefined) {
		messages.push({
			role: "tool",
			content: first.toolCalls.map((c) => ({
				type: "tool-result",
				toolCallId: c.toolCallId,
				toolName: c.toolName,
				output: { type: "json", value: results[c.toolName] ?? null },
			})),
		});
	}
	if (call.followUp.text !== undefined) messages.push({ role: "user", content: call.followUp.text });
	return messages;
}

async function runModelCall(call) {
	const run = call.op === "streamText" ? runStream : runGenerate;
	const first = await run(callOptions(call));
	if (call.followUp === undefined) return first.value;
	const second = await run(callOptions(call, followUpMessages(call, first.value, first.responseMessages)));
	return { ...first.value, followUp: second.value };
}

const ops = {
	streamText: runModelCall,
	generateText: runModelCall,
	getAvailableModels: (call) => provider(call).getAvailableModels(),
	getGenerationInfo: (call) => provider(call).getGenerationInfo({ id: call.id }),
};

function describe(error) {
	const { name, type, statusCode, message, isRetryable, modelId } = error ?? {};
	return { name, type, statusCode, message, isRetryable, modelId, cause: error?.cause?.name ?? null };
}

for (const call of scenario.calls) {
	const op = ops[call.op];
	if (op === undefined) {
		throw new Error(`unknown op ${JSON.stringify(call.op)}`);
	}
	requests = [];
	streamErrors = [];
	let line;
	try {
		line = { ok: true, value: await op(call) };
	} catch (error) {
		// streamText reports the request's failure through onError and then rejects with NoOutputGeneratedError.
		line = { ok: false, error: describe(error), streamErrors };
	}
	line.requests = requests;
	process.stdout.write(`${JSON.stringify(line)}\n`);
}
