/**
 * Interop driver: runs the UNMODIFIED real client `@oh-my-pi/pi-ai` (18.2.3, under Bun) against a pi-native
 * gateway and reports what the client saw, one JSON object per stdout line.
 *
 * stdin: one JSON scenario
 *   { entry: "streamPiNative" | "streamSimple", baseUrl, token,
 *     model: { provider, id, api, ...any other Model fields },
 *     context, options?, abortAfterEvents?: number, abortAfterMs?: number,
 *     repeat?: number }   // run the same request this many times, one after another, in this process
 *                         // (Bun's fetch then reuses kept-alive sockets)
 *
 * stdout lines (`t` = ms since the driver started; `run` = 0-based request number):
 *   { kind: "response", run, t, status, headers, requestId }   from options.onResponse (2xx only)
 *   { kind: "event", run, t, event }                           every AssistantMessageEvent the stream yielded
 *   { kind: "abort", run, t, afterEvents }                     the driver aborted the caller's signal
 *   { kind: "result", run, t, message }                        `await stream.result()` resolved
 *   { kind: "thrown", run, t, name, message, status?, code?, errorKind?, headers?, stack? }
 *                                                              iterating the stream or `.result()` threw
 * Every request ends with exactly one "result" or "thrown" line.
 * Exit status is 0 whenever the driver itself worked, whatever the client did; non-zero means the driver broke.
 */
import { streamSimple } from "@oh-my-pi/pi-ai";
import { streamPiNative } from "@oh-my-pi/pi-ai/providers/pi-native-client";

type Json = Record<string, unknown>;

interface Scenario {
	entry: "streamPiNative" | "streamSimple";
	baseUrl: string;
	token?: string;
	model: Json & { provider: string; id: string; api: string };
	context: Json;
	options?: Json;
	abortAfterEvents?: number;
	abortAfterMs?: number;
	repeat?: number;
}

const started = performance.now();
const elapsed = (): number => Math.round((performance.now() - started) * 10) / 10;

// One ordered sink for stdout; flushed after every line so a hung run still shows its progress, and ended
// (drained) before exit. Plain process.stdout.write followed by process.exit lost the tail of large reports.
const stdout = Bun.stdout.writer();

function emit(line: Json): void {
	stdout.write(`${JSON.stringify(line)}\n`);
	void stdout.flush();
}

function describeError(run: number, err: unknown): Json {
	const out: Json = { kind: "thrown", run, t: elapsed() };
	if (!(err instanceof Error)) return { ...out, name: typeof err, message: String(err) };
	const e = err as Error & { status?: unknown; code?: unknown; kind?: unknown; headers?: unknown };
	Object.assign(out, { name: e.name, message: e.message });
	if (typeof e.status === "number") out.status = e.status;
	if (e.code !== undefined) out.code = e.code;
	if (typeof e.kind === "string") out.errorKind = e.kind;
	if (e.headers instanceof Headers) out.headers = Object.fromEntries(e.headers.entries());
	if (e.stack) out.stack = e.stack;
	return out;
}

async function runOnce(scenario: Scenario, run: number): Promise<void> {
	// A complete-enough Model; the gateway resolves its own model from `${provider}/${id}`.
	const model = {
		name: scenario.model.id,
		reasoning: false,
		input: ["text", "image"],
		cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 },
		contextWindow: 200_000,
		maxTokens: 8192,
		...scenario.model,
		baseUrl: scenario.baseUrl,
		transport: "pi-native",
	};

	const controller = new AbortController();
	const abort = (afterEvents: number | null): void => {
		emit({ kind: "abort", run, t: elapsed(), afterEvents });
		controller.abort();
	};
	const abortTimer =
		typeof scenario.abortAfterMs === "number" ? setTimeout(() => abort(null), scenario.abortAfterMs) : undefined;

	const options = {
		...(scenario.options ?? {}),
		apiKey: scenario.token,
		signal: controller.signal,
		onResponse: (response: { status: number; headers: Record<string, string>; requestId?: string | null }) => {
			const { status, headers } = response;
			emit({ kind: "response", run, t: elapsed(), status, headers, requestId: response.requestId ?? null });
		},
	};

	let count = 0;
	try {
		const entry = scenario.entry === "streamSimple" ? streamSimple : streamPiNative;
		// The driver deliberately passes JSON-shaped inputs straight through.
		// biome-ignore lint/suspicious/noExplicitAny: see above
		const stream = entry(model as any, scenario.context as any, options as any);
		for await (const event of stream) {
			emit({ kind: "event", run, t: elapsed(), event });
			count += 1;
			if (count === scenario.abortAfterEvents) abort(count);
		}
		emit({ kind: "result", run, t: elapsed(), message: await stream.result() });
	} catch (err) {
		emit(describeError(run, err));
	} finally {
		if (abortTimer !== undefined) clearTimeout(abortTimer);
	}
}

const scenario = JSON.parse(await Bun.stdin.text()) as Scenario;
for (let run = 0; run < (scenario.repeat ?? 1); run++) {
	await runOnce(scenario, run);
}
// Drain stdout, then leave: Bun may keep pooled keep-alive sockets around and the report is complete.
await stdout.end();
process.exit(0);
