#!/usr/bin/env node
// The test "cloud": a small OpenAI-compatible chat server on a real language model
// (node-llama-cpp on CPU). Serves one request at a time; see --help. --stub-tokens replaces the
// model with canned tokens served concurrently, for load tests the model is far too slow for.

import { X509Certificate, createHash, randomBytes, verify as verifySignature } from "node:crypto";
import { appendFileSync, readFileSync } from "node:fs";
import http from "node:http";
import http2 from "node:http2";
import process from "node:process";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

const HELP = `Usage: node tests/cloud/server.mjs --model <gguf> [options]

An OpenAI-compatible chat server on a real model, for tests. Prints exactly one line
"LISTENING http://HOST:PORT" to stdout once the model is loaded and the socket is bound;
logs go to stderr.

Options:
  --model <path>        GGUF model file (required unless --stub-tokens)
  --host <addr>         address to listen on (default 127.0.0.1)
  --port <n>            port, 0 for any free one (default 0)
  --threads <n>         CPU threads for inference (default 1; more is far slower on 2 cores)
  --context-size <n>    context window in tokens (default 2048)
  --model-name <name>   model id reported by the API (default smollm2-135m)
  --no-usage            never send usage (streams end without the usage chunk)
  --fail-status <n>     answer every chat request with this HTTP status
  --retry-after <s>     with --fail-status: send "Retry-After: s" with each failure
  --break-after <n>     cut streams after n content deltas, without [DONE]
  --stall-after <n>     stop sending after n content deltas but keep the connection open (0: send
                        the headers and nothing more: no first token)
  --first-token-ms <n>  a slow first token: wait n ms before generating each answer, so its first
                        content delta comes that much later (streamed: after the headers and the
                        role chunk); with the model this holds its one-at-a-time line too, as a
                        busy server does, and with --stub-tokens it adds to the first interval
  --tls-cert <pem>      serve HTTPS with this certificate (chain) and --tls-key: HTTP/2 by ALPN
                        ("h2"), HTTP/1.1 for clients without it; LISTENING then says https://
                        and every HTTP/2 session is logged as "h2 session N from ADDR"
  --tls-key <pem>       the private key of --tls-cert
  --require-jwt         refuse chat requests without a valid device credential: an ES256 JWT
                        whose x5c leaf key verifies it, aud = this server's origin, not expired,
                        and whose jti was never accepted before (a token is good for one request);
                        each accepted token is logged as "jwt ok iss=… aud=… jti=…"
  --record <file>       append one JSON line per chat request to <file>:
                        {"images":[{"mime":…,"bytes":n,"sha256":hex}, …]}, the images it carried
                        (image_url parts with data: URLs) in order
  --stub-tokens <n>     no model: answer every chat with n canned tokens (fewer if max_tokens
                        says so), all requests at once, with real usage (the prompt counted as
                        one token per 4 characters, plus 4 per message); for load tests
  --stub-interval-ms <n> with --stub-tokens: the time between two tokens (default 20)
  --control <path>      listen on this Unix socket for faults to inject at run time, one command
                        a line, answered "ok" or "error: …" (see Control below)
  --help                show this text

Control (--control): each command injects a fault into the next COUNT chat requests (default 1),
after which the flags above apply again; a new command replaces one still pending.
  fail STATUS [COUNT [RETRY_AFTER]]  answer with HTTP STATUS (and "Retry-After: RETRY_AFTER")
  stall AFTER [COUNT]                as --stall-after AFTER (0: no first token)
  break AFTER [COUNT]                as --break-after AFTER
  nousage [COUNT]                    as --no-usage
  clear                              drop the pending fault
  state                              say the pending fault ("fault none" or "fault KIND … left N")

Endpoints: POST /v1/chat/completions, GET /v1/models, GET /health.
Temperature defaults to 0 (greedy) so answers are reproducible. The model reads text only: each
image_url part (a data: URL) reaches it as a marker "[image N: MIME, BYTES bytes]".`;

// Room for a few images as base64 data URLs.
const MAX_BODY_BYTES = 32 << 20;
const DEFAULT_MAX_TOKENS = 256;
const ROLES = new Set(["system", "user", "assistant"]);

function fail(message) {
    process.stderr.write(`server.mjs: ${message}\n`);
    process.exit(2);
}

function intOption(values, name, { min, max, fallback }) {
    const raw = values[name];
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) fail(`--${name} must be an integer, got ${JSON.stringify(raw)}`);
    const n = Number(raw);
    if (n < min || n > max) fail(`--${name} must be between ${min} and ${max}, got ${n}`);
    return n;
}

function parseCommandLine() {
    let parsed;
    try {
        parsed = parseArgs({
            options: {
                model: { type: "string" },
                host: { type: "string", default: "127.0.0.1" },
                port: { type: "string" },
                threads: { type: "string" },
                "context-size": { type: "string" },
                "model-name": { type: "string", default: "smollm2-135m" },
                "no-usage": { type: "boolean", default: false },
                "fail-status": { type: "string" },
                "retry-after": { type: "string" },
                "break-after": { type: "string" },
                "stall-after": { type: "string" },
                "first-token-ms": { type: "string" },
                "require-jwt": { type: "boolean", default: false },
                record: { type: "string" },
                "tls-cert": { type: "string" },
                "tls-key": { type: "string" },
                "stub-tokens": { type: "string" },
                "stub-interval-ms": { type: "string" },
                control: { type: "string" },
                help: { type: "boolean", default: false },
            },
            strict: true,
            allowPositionals: false,
        });
    } catch (e) {
        fail(`${e.message}\n\n${HELP}`);
    }
    const { values } = parsed;
    if (values.help) {
        process.stdout.write(`${HELP}\n`);
        process.exit(0);
    }
    if (!values.model && values["stub-tokens"] === undefined) fail(`--model is required\n\n${HELP}`);
    if (!values["tls-cert"] !== !values["tls-key"]) fail("--tls-cert and --tls-key go together");
    return {
        model: values.model,
        host: values.host,
        port: intOption(values, "port", { min: 0, max: 65535, fallback: 0 }),
        threads: intOption(values, "threads", { min: 1, max: 256, fallback: 1 }),
        contextSize: intOption(values, "context-size", { min: 128, max: 1 << 20, fallback: 2048 }),
        modelName: values["model-name"],
        usage: !values["no-usage"],
        failStatus: intOption(values, "fail-status", { min: 100, max: 599, fallback: null }),
        retryAfter: intOption(values, "retry-after", { min: 0, max: 1 << 30, fallback: null }),
        breakAfter: intOption(values, "break-after", { min: 1, max: 1 << 30, fallback: null }),
        stallAfter: intOption(values, "stall-after", { min: 0, max: 1 << 30, fallback: null }),
        firstTokenMs: intOption(values, "first-token-ms", { min: 0, max: 600000, fallback: 0 }),
        requireJwt: values["require-jwt"],
        record: values.record ?? null,
        tls: values["tls-cert"] ? { cert: values["tls-cert"], key: values["tls-key"] } : null,
        stubTokens: intOption(values, "stub-tokens", { min: 1, max: 1 << 20, fallback: null }),
        stubIntervalMs: intOption(values, "stub-interval-ms", { min: 0, max: 60000, fallback: 20 }),
        control: values.control ?? null,
    };
}

const opts = parseCommandLine();

function log(message) {
    process.stderr.write(`cloud: ${message}\n`);
}

// A rejected request: HTTP status plus the OpenAI error object.
class ApiError extends Error {
    constructor(status, message, { type = "invalid_request_error", param = null, code = null } = {}) {
        super(message);
        this.status = status;
        this.body = { error: { message, type, param, code } };
    }
}

function sendJson(res, status, body, headers = {}) {
    const text = JSON.stringify(body);
    res.writeHead(status, {
        "content-type": "application/json",
        "content-length": Buffer.byteLength(text),
        ...headers,
    });
    res.end(text);
}

function sendError(res, err) {
    if (res.headersSent) {
        res.destroy();
        return;
    }
    sendJson(res, err.status, err.body, err.headers);
}

function readBody(req) {
    return new Promise((resolve, reject) => {
        const chunks = [];
        let size = 0;
        req.on("data", (chunk) => {
            size += chunk.length;
            if (size > MAX_BODY_BYTES) {
                reject(new ApiError(413, `request body is larger than ${MAX_BODY_BYTES} bytes`));
                req.destroy();
                return;
            }
            chunks.push(chunk);
        });
        req.on("end", () => resolve(Buffer.concat(chunks)));
        req.on("error", reject);
    });
}

function isInt(v) {
    return typeof v === "number" && Number.isInteger(v);
}

// Checks an OpenAI chat request and turns it into what the generator needs.
function parseChatRequest(body) {
    let json;
    try {
        json = JSON.parse(body.toString("utf8"));
    } catch (e) {
        throw new ApiError(400, `the request body is not valid JSON: ${e.message}`);
    }
    if (json === null || typeof json !== "object" || Array.isArray(json)) {
        throw new ApiError(400, "the request body must be a JSON object");
    }
    const bad = (param, message) => new ApiError(400, message, { param });
    if (typeof json.model !== "string" || json.model.length === 0) {
        throw bad("model", "'model' is required and must be a non-empty string");
    }
    if (!Array.isArray(json.messages) || json.messages.length === 0) {
        throw bad("messages", "'messages' is required and must be a non-empty array");
    }
    const images = [];
    const history = json.messages.map((m, i) => {
        if (m === null || typeof m !== "object") throw bad(`messages[${i}]`, `messages[${i}] must be an object`);
        if (!ROLES.has(m.role)) {
            throw bad(`messages[${i}].role`, `messages[${i}].role must be one of system, user, assistant`);
        }
        const text = contentText(m.content, `messages[${i}].content`, images, bad);
        if (m.role === "system") return { type: "system", text };
        if (m.role === "user") return { type: "user", text };
        return { type: "model", response: [text] };
    });
    const maxTokens = json.max_completion_tokens ?? json.max_tokens ?? DEFAULT_MAX_TOKENS;
    if (!isInt(maxTokens) || maxTokens < 1) {
        throw bad("max_tokens", "'max_tokens' must be a positive integer");
    }
    const temperature = json.temperature ?? 0;
    if (typeof temperature !== "number" || !(temperature >= 0 && temperature <= 2)) {
        throw bad("temperature", "'temperature' must be a number between 0 and 2");
    }
    const seed = json.seed ?? undefined;
    if (seed !== undefined && !isInt(seed)) throw bad("seed", "'seed' must be an integer");
    const stream = json.stream ?? false;
    if (typeof stream !== "boolean") throw bad("stream", "'stream' must be a boolean");
    const streamOptions = json.stream_options ?? {};
    if (streamOptions === null || typeof streamOptions !== "object" || Array.isArray(streamOptions)) {
        throw bad("stream_options", "'stream_options' must be an object");
    }
    const includeUsage = streamOptions.include_usage ?? false;
    if (typeof includeUsage !== "boolean") {
        throw bad("stream_options.include_usage", "'stream_options.include_usage' must be a boolean");
    }
    if (json.n !== undefined && json.n !== 1) throw bad("n", "only n = 1 is supported");
    return { history, maxTokens, temperature, seed, stream, includeUsage, images };
}

// A message's content as the text the model reads: a string, or parts whose images become
// markers (the model reads no images); each image's digest goes into `images`.
function contentText(content, where, images, bad) {
    if (typeof content === "string") return content;
    if (!Array.isArray(content)) throw bad(where, `${where} must be a string or an array of parts`);
    return content
        .map((part, j) => {
            const at = `${where}[${j}]`;
            if (part?.type === "text" && typeof part.text === "string") return part.text;
            if (part?.type !== "image_url") throw bad(at, `${at} must be a text or image_url part`);
            const url = part.image_url?.url;
            const m = typeof url === "string" && /^data:(image\/[a-z0-9.+-]+);base64,([A-Za-z0-9+/]*={0,2})$/.exec(url);
            if (!m) throw bad(`${at}.image_url.url`, `${at}.image_url.url must be a base64 data: URL of an image`);
            const bytes = Buffer.from(m[2], "base64");
            const sha256 = createHash("sha256").update(bytes).digest("hex");
            images.push({ mime: m[1], bytes: bytes.length, sha256 });
            return `[image ${images.length}: ${m[1]}, ${bytes.length} bytes]`;
        })
        .join("\n");
}

const engine = opts.stubTokens === null ? await modelEngine() : stubEngine();
const { enqueue, checkFits, generate } = engine;

// The real model: one context, one request at a time.
async function modelEngine() {
    const { getLlama, LlamaChat } = await import("node-llama-cpp").catch((e) =>
        fail(`cannot load node-llama-cpp (run tests/cloud/setup.sh): ${e.message}`),
    );

    const loadStart = performance.now();
    // llama.cpp's own messages go to stderr: stdout carries only the LISTENING line.
    const llama = await getLlama({
        gpu: false,
        build: "never",
        logLevel: "error",
        logger: (level, message) => log(`llama.cpp ${level}: ${message.trimEnd()}`),
    }).catch((e) =>
        fail(`cannot start llama.cpp from the prebuilt binaries: ${e.message}`),
    );
    const model = await llama
        .loadModel({ modelPath: opts.model })
        .catch((e) => fail(`cannot load the model ${opts.model}: ${e.message}`));
    const context = await model
        .createContext({ threads: opts.threads, contextSize: opts.contextSize, sequences: 1 })
        .catch((e) => fail(`cannot create a ${opts.contextSize}-token context: ${e.message}`));
    const chat = new LlamaChat({ contextSequence: context.getSequence() });
    log(
        `loaded ${opts.model} in ${Math.round(performance.now() - loadStart)} ms ` +
            `(chat template ${chat.chatWrapper.wrapperName}, ${opts.threads} thread(s), context ${context.contextSize})`,
    );

    // One model context on a small CPU: requests run strictly one after another.
    let queueTail = Promise.resolve();
    function enqueue(job) {
        const run = queueTail.then(job);
        queueTail = run.catch(() => {});
        return run;
    }

    function promptTokenCount(history) {
        const state = chat.chatWrapper.generateContextState({ chatHistory: [...history, { type: "model", response: [] }] });
        return state.contextText.tokenize(model.tokenizer).length;
    }

    // The prompt's size in tokens, refused (before any header goes out) when the answer cannot fit.
    function checkFits(request) {
        const promptTokens = promptTokenCount(request.history);
        if (promptTokens + request.maxTokens > context.contextSize) {
            throw new ApiError(
                400,
                `this model's context is ${context.contextSize} tokens, but the request needs ` +
                    `${promptTokens} prompt + ${request.maxTokens} completion tokens`,
                { param: "messages", code: "context_length_exceeded" },
            );
        }
        return promptTokens;
    }

    // Runs one generation, passing each non-empty piece of text to onDelta.
    async function generate(request, promptTokens, signal, onDelta) {
        let completionTokens = 0;
        let deltas = 0;
        const started = performance.now();
        let firstTokenMs = null;
        const result = await chat.generateResponse(request.history, {
            maxTokens: request.maxTokens,
            temperature: request.temperature,
            seed: request.seed,
            signal,
            stopOnAbortSignal: true,
            onToken: (tokens) => {
                completionTokens += tokens.length;
                firstTokenMs ??= performance.now() - started;
            },
            onTextChunk: (text) => {
                if (text.length > 0) {
                    deltas += 1;
                    onDelta(text, deltas);
                }
            },
        });
        const stop = result.metadata.stopReason;
        const ms = performance.now() - started;
        log(
            `generated ${completionTokens} tokens (prompt ${promptTokens}) in ${Math.round(ms)} ms, ` +
                `first token ${firstTokenMs === null ? "-" : Math.round(firstTokenMs)} ms, stop ${stop}`,
        );
        return {
            text: result.response,
            finishReason: stop === "maxTokens" ? "length" : "stop",
            aborted: stop === "abort",
            usage: {
                prompt_tokens: promptTokens,
                completion_tokens: completionTokens,
                total_tokens: promptTokens + completionTokens,
            },
        };
    }
    return { enqueue, checkFits, generate, dispose };

    async function dispose() {
        await context.dispose();
        await model.dispose();
        await llama.dispose();
    }
}

// Canned tokens at a fixed pace, every request at once: what a load test needs of a cloud.
function stubEngine() {
    log(`stub: ${opts.stubTokens} tokens per answer, one every ${opts.stubIntervalMs} ms`);
    const checkFits = (request) =>
        request.history.reduce(
            (n, m) => n + 4 + Math.ceil((m.text ?? m.response.join("")).length / 4),
            0,
        );
    async function generate(request, promptTokens, signal, onDelta) {
        const completionTokens = Math.min(opts.stubTokens, request.maxTokens);
        let text = "";
        let sent = 0;
        while (sent < completionTokens && !signal.aborted) {
            await new Promise((resolve) => setTimeout(resolve, opts.stubIntervalMs));
            if (signal.aborted) break;
            const piece = `t${sent} `;
            text += piece;
            sent += 1;
            onDelta(piece, sent);
        }
        return {
            text,
            finishReason: completionTokens < opts.stubTokens ? "length" : "stop",
            aborted: signal.aborted,
            usage: { prompt_tokens: promptTokens, completion_tokens: sent, total_tokens: promptTokens + sent },
        };
    }
    return { enqueue: (job) => job(), checkFits, generate, dispose: async () => {} };
}

// --first-token-ms: holds the answer back; false when the client left meanwhile.
async function firstTokenDelay(signal) {
    if (opts.firstTokenMs === 0) return true;
    try {
        await sleep(opts.firstTokenMs, undefined, { signal });
    } catch {
        return false;
    }
    log(`held the first token back ${opts.firstTokenMs} ms (--first-token-ms)`);
    return true;
}

function completionId() {
    return `chatcmpl-${randomBytes(12).toString("hex")}`;
}

/** jti → exp of every token accepted and not yet expired. */
const seenJti = new Map();

// Checks the device credential with node's own crypto, independently of aiesim's codec.
function checkJwt(req) {
    const denied = (why) => new ApiError(401, `device credential refused: ${why}`, { type: "authentication_error", code: "invalid_credential" });
    const auth = req.headers.authorization ?? "";
    const m = /^Bearer ([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(auth);
    if (!m) throw denied("no bearer JWT");
    const [, h, c, sig] = m;
    let header, claims;
    try {
        header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
        claims = JSON.parse(Buffer.from(c, "base64url").toString("utf8"));
    } catch {
        throw denied("header or claims are not JSON");
    }
    if (header.alg !== "ES256") throw denied(`alg ${header.alg}`);
    if (!Array.isArray(header.x5c) || header.x5c.length === 0) throw denied("no x5c");
    let key;
    try {
        key = new X509Certificate(Buffer.from(header.x5c[0], "base64")).publicKey;
    } catch (e) {
        throw denied(`x5c: ${e.message}`);
    }
    const signature = Buffer.from(sig, "base64url");
    const ok = verifySignature("sha256", Buffer.from(`${h}.${c}`), { key, dsaEncoding: "ieee-p1363" }, signature);
    if (!ok) throw denied("bad signature");
    const origin = `${opts.tls ? "https" : "http"}://${req.headers.host ?? req.headers[":authority"]}`;
    if (claims.aud !== origin) throw denied(`aud ${claims.aud} is not ${origin}`);
    const now = Math.floor(Date.now() / 1000);
    if (!(claims.exp > now) || !(claims.nbf <= now + 30)) throw denied("outside its validity");
    if (typeof claims.jti !== "string" || claims.jti.length < 16) throw denied("no jti");
    // Seen ids are kept until their token expires: after that the validity check refuses it.
    for (const [jti, exp] of seenJti) if (exp <= now) seenJti.delete(jti);
    if (seenJti.has(claims.jti)) throw denied(`replayed (jti ${claims.jti} was used before)`);
    seenJti.set(claims.jti, claims.exp);
    log(`jwt ok iss=${claims.iss} aud=${claims.aud} jti=${claims.jti}`);
}

async function handleChat(req, res) {
    const body = await readBody(req);
    if (opts.requireJwt) checkJwt(req);
    const faults = faultsForRequest();
    if (faults.failStatus !== null) {
        const err = new ApiError(faults.failStatus, `the test cloud is configured to answer ${faults.failStatus}`, {
            type: "server_error",
            code: "injected_failure",
        });
        if (faults.retryAfter !== null) err.headers = { "retry-after": String(faults.retryAfter) };
        throw err;
    }
    const request = parseChatRequest(body);
    if (request.images.length > 0) {
        log(`images: ${request.images.map((i) => `${i.mime} ${i.bytes} bytes sha256 ${i.sha256}`).join(", ")}`);
    }
    if (opts.record !== null) appendFileSync(opts.record, `${JSON.stringify({ images: request.images })}\n`);
    const abort = new AbortController();
    // A closed response before we finished means the client went away: stop generating.
    res.on("close", () => {
        if (!res.writableFinished) abort.abort(new Error("client disconnected"));
    });
    await enqueue(async () => {
        if (abort.signal.aborted) return;
        const promptTokens = checkFits(request);
        const id = completionId();
        const created = Math.floor(Date.now() / 1000);
        if (!request.stream) {
            if (!(await firstTokenDelay(abort.signal))) return;
            const out = await generate(request, promptTokens, abort.signal, () => {});
            const reply = {
                id,
                object: "chat.completion",
                created,
                model: opts.modelName,
                choices: [
                    {
                        index: 0,
                        message: { role: "assistant", content: out.text },
                        logprobs: null,
                        finish_reason: out.finishReason,
                    },
                ],
            };
            if (faults.usage) reply.usage = out.usage;
            sendJson(res, 200, reply);
            return;
        }
        const withUsage = request.includeUsage && faults.usage;
        const chunk = (choices, extra = {}) => {
            const c = { id, object: "chat.completion.chunk", created, model: opts.modelName, choices, ...extra };
            if (withUsage && !("usage" in extra)) c.usage = null;
            return `data: ${JSON.stringify(c)}\n\n`;
        };
        const choice = (delta, finishReason = null) => [{ index: 0, delta, logprobs: null, finish_reason: finishReason }];
        res.writeHead(200, {
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            // A connection-specific header, which HTTP/2 forbids.
            ...(req.httpVersionMajor === 1 ? { connection: "keep-alive" } : {}),
        });
        res.write(chunk(choice({ role: "assistant", content: "" })));
        if (faults.stallAfter === 0) {
            log("stalling the stream before any delta (--stall-after 0)");
            return;
        }
        if (!(await firstTokenDelay(abort.signal))) return;
        let cut = false;
        let out;
        try {
            out = await generate(request, promptTokens, abort.signal, (text, n) => {
                if (cut || res.destroyed) return;
                if (faults.breakAfter !== null && n >= faults.breakAfter) {
                    cut = true;
                    log(`breaking the stream after ${n} deltas (--break-after)`);
                    // Destroyed only once the delta is flushed, so the client does get n deltas.
                    res.write(chunk(choice({ content: text })), () => res.destroy());
                    abort.abort(new Error("stream cut on purpose"));
                    return;
                }
                res.write(chunk(choice({ content: text })));
                if (faults.stallAfter !== null && n >= faults.stallAfter) {
                    cut = true;
                    log(`stalling the stream after ${n} deltas (--stall-after)`);
                    abort.abort(new Error("stream stalled on purpose"));
                }
            });
        } catch (e) {
            // Headers are out: a provider can only signal the failure in-band and drop [DONE].
            const message = `generation failed: ${e.message}`;
            log(message);
            if (!res.destroyed) {
                res.write(`data: ${JSON.stringify({ error: { message, type: "server_error", param: null, code: null } })}\n\n`);
                res.end();
            }
            return;
        }
        if (cut || out.aborted || res.destroyed) return;
        res.write(chunk(choice({}, out.finishReason)));
        if (withUsage) res.write(chunk([], { usage: out.usage }));
        res.end("data: [DONE]\n\n");
    });
}

// The fault injected at run time (--control) and how many more chat requests it takes.
let pendingFault = null;

// The fault options of one chat request: the command line's, or the pending fault's once.
function faultsForRequest() {
    const faults = {
        failStatus: opts.failStatus,
        retryAfter: opts.retryAfter,
        breakAfter: opts.breakAfter,
        stallAfter: opts.stallAfter,
        usage: opts.usage,
    };
    if (pendingFault === null) return faults;
    const { set, left } = pendingFault;
    log(`injecting ${describeFault(pendingFault)} (control)`);
    pendingFault = left > 1 ? { set, left: left - 1 } : null;
    return { ...faults, ...set };
}

function describeFault({ set, left }) {
    const what = Object.entries(set)
        .map(([k, v]) => `${k}=${v}`)
        .join(" ");
    return `fault ${what} left ${left}`;
}

// One control command: the pending fault it sets, or what it answers; throws on a mistake.
function controlCommand(line) {
    const [verb, ...args] = line.trim().split(/\s+/);
    const num = (i, what, { min, max, fallback }) => {
        const raw = args[i];
        if (raw === undefined && fallback !== undefined) return fallback;
        if (!/^\d+$/.test(raw ?? "")) throw new Error(`${verb}: ${what} must be an integer`);
        const n = Number(raw);
        if (n < min || n > max) throw new Error(`${verb}: ${what} must be between ${min} and ${max}`);
        return n;
    };
    const most = (n) => {
        if (args.length > n) throw new Error(`${verb} takes at most ${n} arguments`);
    };
    const count = (i) => num(i, "COUNT", { min: 1, max: 1 << 20, fallback: 1 });
    switch (verb) {
        case "fail":
            most(3);
            pendingFault = {
                set: {
                    failStatus: num(0, "STATUS", { min: 400, max: 599 }),
                    retryAfter: num(2, "RETRY_AFTER", { min: 0, max: 1 << 30, fallback: null }),
                },
                left: count(1),
            };
            return [];
        case "stall":
            most(2);
            pendingFault = { set: { stallAfter: num(0, "AFTER", { min: 0, max: 1 << 30 }) }, left: count(1) };
            return [];
        case "break":
            most(2);
            pendingFault = { set: { breakAfter: num(0, "AFTER", { min: 1, max: 1 << 30 }) }, left: count(1) };
            return [];
        case "nousage":
            most(1);
            pendingFault = { set: { usage: false }, left: count(0) };
            return [];
        case "clear":
            most(0);
            pendingFault = null;
            return [];
        case "state":
            most(0);
            return [pendingFault === null ? "fault none" : describeFault(pendingFault)];
        default:
            throw new Error(`unknown command ${JSON.stringify(verb ?? "")} (fail, stall, break, nousage, clear, state)`);
    }
}

// The control socket (--control): a file the test harness reaches from any network namespace.
async function serveControl(path) {
    const { createServer } = await import("node:net");
    const { rmSync } = await import("node:fs");
    // A socket left by an earlier run of the same world (a restarted cloud) is ours to replace.
    rmSync(path, { force: true });
    const control = createServer((socket) => {
        let buffered = "";
        socket.setEncoding("utf8");
        socket.on("error", () => {});
        socket.on("data", (data) => {
            buffered += data;
            let nl;
            while ((nl = buffered.indexOf("\n")) >= 0) {
                const line = buffered.slice(0, nl);
                buffered = buffered.slice(nl + 1);
                try {
                    const lines = controlCommand(line);
                    log(`control: ${line.trim()}`);
                    socket.write([...lines, "ok"].map((l) => `${l}\n`).join(""));
                } catch (e) {
                    socket.write(`error: ${e.message}\n`);
                }
            }
        });
    });
    await new Promise((resolve, reject) => {
        control.once("error", reject);
        control.listen(path, resolve);
    }).catch((e) => fail(`cannot listen on the control socket ${path}: ${e.message}`));
}

function handleModels(res) {
    sendJson(res, 200, {
        object: "list",
        data: [{ id: opts.modelName, object: "model", created: 0, owned_by: "aiesim-test-cloud" }],
    });
}

async function handleRequest(req, res) {
    const started = performance.now();
    const connection = connectionOf(req);
    res.on("close", () => {
        const how = res.writableFinished ? "" : " (connection closed early)";
        const ms = Math.round(performance.now() - started);
        log(`${req.method} ${req.url} ${res.statusCode} ${ms} ms HTTP/${req.httpVersion} on connection ${connection}${how}`);
    });
    try {
        const path = new URL(req.url, "http://localhost").pathname;
        const routes = {
            "/v1/chat/completions": ["POST", () => handleChat(req, res)],
            "/v1/models": ["GET", () => handleModels(res)],
            "/health": ["GET", () => sendJson(res, 200, { status: "ok" })],
        };
        const route = routes[path];
        if (!route) throw new ApiError(404, `no route for ${path}`, { code: "not_found" });
        if (req.method !== route[0]) {
            res.setHeader("allow", route[0]);
            throw new ApiError(405, `${path} accepts ${route[0]} only`, { code: "method_not_allowed" });
        }
        await route[1]();
    } catch (e) {
        if (e instanceof ApiError) {
            sendError(res, e);
        } else {
            log(`internal error: ${e.stack ?? e}`);
            sendError(res, new ApiError(500, `internal error: ${e.message}`, { type: "server_error" }));
        }
    }
}

// Numbered connections in the log show whether clients reuse them.
const connectionIds = new WeakMap();
let connections = 0;

// Plain HTTP/1.1, or TLS with HTTP/2 preferred by ALPN (HTTP/1.1 still served).
function makeServer() {
    if (!opts.tls) return http.createServer(handleRequest);
    let cert, key;
    try {
        cert = readFileSync(opts.tls.cert);
        key = readFileSync(opts.tls.key);
    } catch (e) {
        fail(`cannot read the TLS certificate or key: ${e.message}`);
    }
    const secure = http2.createSecureServer({ cert, key, allowHTTP1: true }, handleRequest);
    secure.on("session", (session) => {
        connectionIds.set(session, ++connections);
        log(`h2 session ${connections} from ${session.socket?.remoteAddress}`);
    });
    secure.on("tlsClientError", (e) => log(`TLS handshake failed: ${e.message}`));
    return secure;
}

// An HTTP/2 request belongs to its session; an HTTP/1.1 one to its socket.
function connectionOf(req) {
    return req.stream ? connectionIds.get(req.stream.session) : connectionIds.get(req.socket);
}

if (opts.control !== null) await serveControl(opts.control);
const server = makeServer();
server.on(opts.tls ? "secureConnection" : "connection", (socket) => {
    if (!socket.alpnProtocol || socket.alpnProtocol !== "h2") connectionIds.set(socket, ++connections);
});
server.on("error", (e) => fail(`cannot listen on ${opts.host}:${opts.port}: ${e.message}`));
server.listen(opts.port, opts.host, () => {
    const { address, port } = server.address();
    const host = address.includes(":") ? `[${address}]` : address;
    process.stdout.write(`LISTENING ${opts.tls ? "https" : "http"}://${host}:${port}\n`);
});

async function shutdown(signal) {
    log(`${signal}: shutting down`);
    server.close();
    server.closeAllConnections?.();
    try {
        await engine.dispose();
    } finally {
        process.exit(0);
    }
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
