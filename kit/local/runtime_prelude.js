// The WapoJS worker's globals, rebuilt over one host dispatcher (kit/runtime.py).
// Evaluated first in every fresh context, in one call: it takes the host's two functions
// (__kit_host, __kit_register) and deletes their names, sets scriptArgs, and hands the two
// entry points the host calls back through (events, readOutput) to __kit_register, so nothing
// host-facing stays reachable from the contract.
//
// Compiling JavaScript is most of what a fresh context costs (about 65 us per KB here), so the
// parts a contract rarely needs are modules at the end of this file, after "//@module NAME"
// lines: kit/runtime.py cuts them off, and a module is compiled only when the contract first
// touches one of its globals or the core needs it (e.g. a binary fetch body needs the bytes
// module). What nearly every contract uses (timers, fetch and its URL parsing) stays in the core.
(function (g, host, register) {
  "use strict";
  delete g.__kit_host;
  delete g.__kit_register;
  // Engine extras the real worker lacks (phatjs from @phala/fn 0.2.22 has neither): a contract
  // must not come to depend on them locally (tests/test_phatjs_differential.py).
  delete g.__date_clock;
  delete g.Atomics;

  // What the host-facing paths (call, events, readOutput) use, taken before the contract runs:
  // a contract that replaces JSON.parse, String or Uint8Array changes only its own view.
  const jsonParse = JSON.parse;
  const jsonStringify = JSON.stringify;
  const toText = String;
  const ownProperty = Object.getOwnPropertyDescriptor;
  const Bytes = Uint8Array;

  function call(op, ...args) {
    const reply = jsonParse(host(op, jsonStringify(args)));
    if (reply.e !== undefined) throw new (reply.t === "TypeError" ? TypeError : Error)(reply.e);
    return reply.v;
  }

  g.scriptArgs = [call("request")];

  class DOMException extends Error {
    constructor(message = "", name = "Error") {
      super(message);
      this.name = name;
    }
  }

  // ---- modules compiled on first use ----------------------------------------------------

  const evaluate = g.eval; // taken before the contract runs, so it cannot be swapped
  const modules = new Map();
  const internals = { DOMException };

  function load(name) {
    if (!modules.has(name)) modules.set(name, evaluate(call("module", name))(g, internals));
    return modules.get(name);
  }

  const define = (name, value) => Object.defineProperty(g, name, { value, writable: true, enumerable: true, configurable: true });

  // Each global stays an accessor until first read (which loads the module and makes every
  // still-untouched global of it a plain property) or first assignment (which replaces it, as
  // assigning replaces any global).
  function lazyGlobals(module, names) {
    const getters = new Map();
    for (const name of names) {
      const get = () => {
        const exports = load(module);
        for (const [other, getter] of getters) {
          const now = Object.getOwnPropertyDescriptor(g, other);
          if (now && now.get === getter) define(other, exports[other]);
        }
        return g[name];
      };
      getters.set(name, get);
      Object.defineProperty(g, name, { get, set: (value) => define(name, value), enumerable: true, configurable: true });
    }
  }

  lazyGlobals("bytes", ["TextEncoder", "TextDecoder", "btoa", "atob"]);
  lazyGlobals("url", ["URL", "URLSearchParams"]);
  const bytes = () => load("bytes");
  // Whether a value is an instance of a module's class, without loading the module for it (no
  // instance can exist before the module is loaded).
  const isInstance = (value, module, name) => modules.has(module) && value instanceof modules.get(module)[name];

  // ---- console ---------------------------------------------------------------------------

  function describe(value) {
    if (typeof value === "string") return value;
    if (value instanceof Error) return value.stack ? `${value.name}: ${value.message}\n${value.stack}` : `${value.name}: ${value.message}`;
    if (typeof value === "function") return `[Function ${value.name || "(anonymous)"}]`;
    if (typeof value === "bigint") return `${value}n`;
    if (value === undefined || typeof value === "symbol") return String(value);
    try {
      return jsonStringify(value, (_, v) => (typeof v === "bigint" ? `${v}n` : v)) ?? toText(value);
    } catch (_) {
      return String(value);
    }
  }

  const log = (level) => (...args) => { call("log", level, args.map(describe).join(" ")); };
  // log/info/warn/error only, as WapoJS's console and phatjs: no console.debug in production.
  g.console = { log: log("log"), info: log("info"), warn: log("warn"), error: log("error") };
  g.print = g.console.log;
  const reportUncaught = (where, error) => g.console.error(`Uncaught (in ${where})`, error);

  // ---- timers ----------------------------------------------------------------------------

  const timers = new Map();
  let nextTimerId = 1;

  function schedule(callback, ms, args, repeat) {
    const fn = typeof callback === "function" ? callback : () => (0, eval)(String(callback));
    const id = nextTimerId++;
    const delay = Math.max(0, Number(ms) || 0);
    timers.set(id, { fn, args, delay, repeat });
    call("timer", id, delay);
    return id;
  }

  function cancel(id) {
    if (timers.delete(id)) call("untimer", id);
  }

  function fireTimer(id) {
    const timer = timers.get(id);
    if (!timer) return;
    if (timer.repeat) call("timer", id, Math.max(timer.delay, 1));
    else timers.delete(id);
    try {
      timer.fn.apply(undefined, timer.args);
    } catch (error) {
      reportUncaught("timer", error);
    }
  }

  g.setTimeout = (fn, ms, ...args) => schedule(fn, ms, args, false);
  g.setInterval = (fn, ms, ...args) => schedule(fn, ms, args, true);
  g.clearTimeout = g.clearInterval = (id) => { if (id != null) cancel(id); };
  g.setImmediate = (fn, ...args) => schedule(fn, 0, args, false);
  g.queueMicrotask = (fn) => { Promise.resolve().then(fn).catch((e) => reportUncaught("microtask", e)); };
  g.performance = { now: () => call("now") };

  // ---- AbortController -------------------------------------------------------------------

  class AbortSignal {
    constructor() {
      this.aborted = false;
      this.reason = undefined;
      this.onabort = null;
      this._listeners = [];
    }
    addEventListener(type, fn) { if (type === "abort" && typeof fn === "function") this._listeners.push(fn); }
    removeEventListener(type, fn) { this._listeners = this._listeners.filter((f) => f !== fn); }
    throwIfAborted() { if (this.aborted) throw this.reason; }
    _abort(reason) {
      if (this.aborted) return;
      this.aborted = true;
      this.reason = reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
      const event = { type: "abort", target: this };
      for (const fn of [this.onabort, ...this._listeners]) {
        if (typeof fn !== "function") continue;
        try { fn.call(this, event); } catch (error) { reportUncaught("abort listener", error); }
      }
    }
    static abort(reason) {
      const signal = new AbortSignal();
      signal._abort(reason);
      return signal;
    }
    static timeout(ms) {
      const signal = new AbortSignal();
      g.setTimeout(() => signal._abort(new DOMException("The operation timed out.", "TimeoutError")), ms);
      return signal;
    }
  }

  class AbortController {
    constructor() { this.signal = new AbortSignal(); }
    abort(reason) { this.signal._abort(reason); }
  }

  // ---- URL parsing (the URL class is in the url module) ---------------------------------

  const URL_PATTERN = /^([a-zA-Z][a-zA-Z0-9+.-]*:)(?:\/\/(?:([^:@/?#]*)(?::([^@/?#]*))?@)?(\[[^\]]*\]|[^:/?#]*)(?::(\d*))?)?([^?#]*)(\?[^#]*)?(#.*)?$/;
  const SPECIAL_PORTS = { "http:": "80", "https:": "443", "ws:": "80", "wss:": "443", "ftp:": "21", "file:": "" };
  const encodeRuns = (s) => s.replace(/[\x00-\x20"<>`{}\x7f-\uffff]+/g, (run) => encodeURIComponent(run));

  function removeDotSegments(path) {
    const out = [];
    const segments = path.split("/");
    segments.forEach((segment, i) => {
      const last = i === segments.length - 1;
      if (segment === "..") { if (out.length > 1) out.pop(); if (last) out.push(""); }
      else if (segment === ".") { if (last) out.push(""); }
      else out.push(segment);
    });
    return out.join("/");
  }

  const cleanUrlText = (value) => String(value).replace(/^[\x00-\x20]+|[\x00-\x20]+$/g, "").replace(/[\t\n\r]/g, "");

  // Whether a URL_PATTERN match is a whole URL (a special scheme other than file: needs a host).
  function isAbsoluteMatch(match) {
    if (!match) return false;
    const protocol = match[1].toLowerCase();
    return !(protocol in SPECIAL_PORTS && match[4] === undefined && protocol !== "file:");
  }

  // A URL's parts, as the URL class keeps them (its fields).
  function urlFields(match) {
    const protocol = match[1].toLowerCase();
    const special = protocol in SPECIAL_PORTS;
    if (special && protocol !== "file:" && !match[4]) throw new TypeError(`Invalid URL: missing host`);
    const hostname = match[4] === undefined ? null : match[4].toLowerCase();
    const port = match[5] || "";
    let path = encodeRuns(match[6] || "");
    if (hostname !== null || special) path = removeDotSegments(path.startsWith("/") ? path : "/" + path);
    return {
      _protocol: protocol,
      _username: match[2] || "",
      _password: match[3] || "",
      _hostname: hostname,
      _port: port && String(Number(port)) !== SPECIAL_PORTS[protocol] ? String(Number(port)) : "",
      _pathname: path,
      _search: match[7] && match[7] !== "?" ? encodeRuns(match[7]) : "",
      _hash: match[8] && match[8] !== "#" ? encodeRuns(match[8]) : "",
    };
  }

  function hrefOf(u) {
    const userinfo = u._username || u._password ? u._username + (u._password ? ":" + u._password : "") + "@" : "";
    const authority = u._hostname !== null ? "//" + userinfo + u._hostname + (u._port ? ":" + u._port : "") : "";
    return u._protocol + authority + u._pathname + u._search + u._hash;
  }

  // What `new URL(value).href` gives (no base), without compiling the url module.
  function absoluteHref(value) {
    const text = cleanUrlText(value);
    const match = URL_PATTERN.exec(text);
    if (!isAbsoluteMatch(match)) throw new TypeError(`Invalid URL: ${text}`);
    return hrefOf(urlFields(match));
  }

  Object.assign(internals, { URL_PATTERN, encodeRuns, removeDotSegments, cleanUrlText, isAbsoluteMatch, urlFields, hrefOf });

  // ---- fetch -----------------------------------------------------------------------------

  class Headers {
    constructor(init) {
      this._map = new Map();
      if (init instanceof Headers) init.forEach((v, k) => this.append(k, v));
      else if (Array.isArray(init)) init.forEach(([k, v]) => this.append(k, v));
      else if (init && typeof init === "object") Object.keys(init).forEach((k) => this.append(k, init[k]));
    }
    append(name, value) {
      const key = String(name).toLowerCase();
      const old = this._map.get(key);
      this._map.set(key, old === undefined ? String(value) : old + ", " + String(value));
    }
    set(name, value) { this._map.set(String(name).toLowerCase(), String(value)); }
    get(name) { const v = this._map.get(String(name).toLowerCase()); return v === undefined ? null : v; }
    has(name) { return this._map.has(String(name).toLowerCase()); }
    delete(name) { this._map.delete(String(name).toLowerCase()); }
    forEach(callback, thisArg) { for (const [k, v] of this._map) callback.call(thisArg, v, k, this); }
    *entries() { yield* this._map.entries(); }
    *keys() { yield* this._map.keys(); }
    *values() { yield* this._map.values(); }
    [Symbol.iterator]() { return this.entries(); }
  }

  class Response {
    constructor(body = null, init = {}) {
      this.status = init.status === undefined ? 200 : init.status;
      this.statusText = init.statusText || "";
      this.ok = this.status >= 200 && this.status < 300;
      this.headers = new Headers(init.headers);
      this.url = init.url || "";
      this.redirected = Boolean(init.redirected);
      this.type = "default";
      this.bodyUsed = false;
      this._text = typeof body === "string" ? body : null;
      this._bytes = body === null || typeof body === "string" ? null : bytes().toBytes(body, "body");
    }
    _consume() {
      if (this.bodyUsed) return Promise.reject(new TypeError("Body has already been consumed"));
      this.bodyUsed = true;
      return Promise.resolve();
    }
    _raw() { return this._bytes || (this._text === null ? new Uint8Array(0) : bytes().utf8Encode(this._text)); }
    text() { return this._consume().then(() => (this._text !== null ? this._text : bytes().utf8Decode(this._raw(), false))); }
    json() { return this.text().then((t) => JSON.parse(t)); }
    bytes() { return this._consume().then(() => this._raw()); }
    arrayBuffer() { return this.bytes().then((b) => b.slice().buffer); }
  }

  function requestBody(body, headers) {
    if (body === undefined || body === null) return {};
    if (typeof body === "string") {
      if (!headers.has("content-type")) headers.set("content-type", "text/plain;charset=UTF-8");
      return { text: body };
    }
    if (isInstance(body, "url", "URLSearchParams")) {
      if (!headers.has("content-type")) headers.set("content-type", "application/x-www-form-urlencoded;charset=UTF-8");
      return { text: body.toString() };
    }
    if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) return { b64: bytes().base64Encode(bytes().toBytes(body, "body")) };
    return { text: String(body) };
  }

  const fetches = new Map();
  let nextFetchId = 1;

  g.fetch = function fetch(input, init = {}) {
    return new Promise((resolve, reject) => {
      const fromRequest = input && typeof input === "object" && !isInstance(input, "url", "URL") && "url" in input;
      const url = absoluteHref(fromRequest ? input.url : String(input));
      const method = String(init.method || (fromRequest && input.method) || "GET").toUpperCase();
      const headers = new Headers(init.headers || (fromRequest ? input.headers : undefined));
      const body = requestBody(init.body !== undefined ? init.body : fromRequest ? input.body : undefined, headers);
      const signal = init.signal || (fromRequest ? input.signal : undefined);
      if (signal && signal.aborted) return reject(signal.reason);
      const id = nextFetchId++;
      // Abort rejects the promise, but the request stays in flight and keeps the worker alive
      // until it completes, as in Phala's runtime (only process.exit ends it early).
      const onAbort = () => {
        const pending = fetches.get(id);
        if (!pending || pending.aborted) return;
        pending.aborted = true;
        reject(signal.reason);
      };
      fetches.set(id, { resolve, reject, signal, onAbort });
      if (signal) signal.addEventListener("abort", onAbort);
      call("fetch", id, { url, method, headers: Array.from(headers.entries()), ...body });
    });
  };

  function settleFetch(id, result) {
    const pending = fetches.get(id);
    if (!pending) return;
    fetches.delete(id);
    if (pending.signal) pending.signal.removeEventListener("abort", pending.onAbort);
    if (pending.aborted) return;
    if (result.error !== undefined) return pending.reject(new TypeError(result.error));
    const body = result.b64 !== undefined ? bytes().base64Decode(result.b64) : result.text;
    pending.resolve(new Response(body, result));
  }

  // ---- Wapo ------------------------------------------------------------------------------

  const hexOf = (data, what) => bytes().toHex(bytes().toBytes(data, what));
  const fromHex = (hex) => bytes().fromHex(hex);
  function quoteBytes(answer) {
    if (typeof answer === "string") return fromHex(answer);
    const quote = fromHex(answer.quote);
    const dstack = Object.freeze({ event_log: answer.event_log, compose_hash: answer.compose_hash });
    return Object.defineProperty(quote, "dstack", { value: dstack, enumerable: false });
  }
  const Wapo = {
    deriveSecret: (salt) => fromHex(call("deriveSecret", hexOf(salt, "salt"))),
    hash: (algorithm, data) => fromHex(call("hash", String(algorithm), hexOf(data, "data"))),
    nonCryptographicHash: (algorithm, data) => fromHex(call("nonCryptographicHash", String(algorithm), hexOf(data, "data"))),
    concatU8a(arrays) {
      const total = arrays.reduce((n, a) => n + a.length, 0);
      const merged = new Uint8Array(total);
      let offset = 0;
      for (const a of arrays) { merged.set(a, offset); offset += a.length; }
      return merged;
    },
    workerPublicKey: () => fromHex(call("workerPublicKey")),
    workerSign: (message) => fromHex(call("workerSign", hexOf(message, "message"))),
    // No SGX outside the enclave: a dev quote (bytes, as the real worker's quote) that says so
    // in its first bytes and binds the message like a real one (kit.runtime.dev_quote). Under
    // `kit gateway serve` in a dstack CVM: the guest agent's TDX quote, with its event log and
    // compose hash as the read-only `dstack` property of the bytes (kit.runtime.WapoSource).
    sgxQuote: (message) => quoteBytes(call("sgxQuote", hexOf(message, "message"))),
    env: {},
  };

  Object.assign(g, {
    DOMException, AbortSignal, AbortController, Headers, Response, Wapo, global: g, window: g,
  });
  // Wapo.exit (also process.exit) closes every timer and request still pending, so the run ends
  // once the current jobs are done and scriptOutput is read, as the real worker's exit does.
  Wapo.exit = () => {
    for (const id of Array.from(timers.keys())) cancel(id);
    for (const id of Array.from(fetches.keys())) { fetches.delete(id); call("unfetch", id); }
  };
  g.process = { env: Wapo.env, exit: Wapo.exit, argv: ["wapojs", "<eval>", ...g.scriptArgs], version: "v0.9.0" };

  function events(kind, id, payload) {
    if (kind === "timer") fireTimer(id);
    else if (kind === "fetch") settleFetch(id, jsonParse(payload));
  }

  // The output as a string, or undefined when none is set; the host reads the string itself (no
  // JSON round trip). `plainOnly` (after the time limit) runs no contract code: only a string
  // held in a plain data property counts.
  function readOutput(plainOnly) {
    if (plainOnly) {
      const found = ownProperty(g, "scriptOutput");
      return found && typeof found.value === "string" ? found.value : undefined;
    }
    const out = g.scriptOutput;
    if (out === undefined || typeof out === "string") return out;
    if (out instanceof Bytes) return bytes().utf8Decode(out, false);
    return toText(out);
  }

  register(events, readOutput);
})(globalThis, globalThis.__kit_host, globalThis.__kit_register);

//@module bytes
// bytes, UTF-8, base64: TextEncoder, TextDecoder, btoa, atob and the core's byte helpers.
(function (g, internals) {
  "use strict";
  const { DOMException } = internals;


  function utf8Encode(text) {
    const out = [];
    for (let i = 0; i < text.length; i++) {
      let c = text.charCodeAt(i);
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
        const d = text.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
          i++;
        } else c = 0xfffd;
      } else if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return new Uint8Array(out);
  }

  // WHATWG UTF-8 decode: each maximal invalid subpart becomes one U+FFFD (or throws if fatal).
  function utf8Decode(bytes, fatal) {
    const points = [];
    let i = 0;
    while (i < bytes.length) {
      const b = bytes[i];
      let need = 0, cp = 0, lower = 0x80, upper = 0xbf;
      if (b < 0x80) { points.push(b); i++; continue; }
      if (b >= 0xc2 && b <= 0xdf) { need = 1; cp = b & 0x1f; }
      else if (b >= 0xe0 && b <= 0xef) { need = 2; cp = b & 0x0f; }
      else if (b >= 0xf0 && b <= 0xf4) { need = 3; cp = b & 0x07; }
      if (b === 0xe0) lower = 0xa0; else if (b === 0xed) upper = 0x9f;
      else if (b === 0xf0) lower = 0x90; else if (b === 0xf4) upper = 0x8f;
      let seen = 1;
      while (need > 0 && seen <= need) {
        const c = bytes[i + seen];
        if (c === undefined || c < lower || c > upper) break;
        cp = (cp << 6) | (c & 0x3f);
        lower = 0x80; upper = 0xbf;
        seen++;
      }
      if (need === 0 || seen <= need) {
        if (fatal) throw new TypeError("The encoded data was not valid UTF-8");
        points.push(0xfffd);
        i += need === 0 ? 1 : seen;
        continue;
      }
      points.push(cp);
      i += seen;
    }
    let text = "";
    for (let k = 0; k < points.length; k += 8192) {
      text += String.fromCodePoint.apply(null, points.slice(k, k + 8192));
    }
    return text;
  }

  function toBytes(data, what) {
    if (typeof data === "string") return utf8Encode(data);
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    throw new TypeError(`${what} must be a string, an ArrayBuffer or a typed array`);
  }

  const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
  const toHex = (bytes) => Array.from(bytes, (b) => HEX[b]).join("");
  function fromHex(hex) {
    const out = new Uint8Array(hex.length / 2);
    for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.substr(i * 2, 2), 16);
    return out;
  }

  const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const B64_INDEX = new Map(Array.from(B64, (c, i) => [c, i]));

  function base64Encode(bytes) {
    let out = "";
    for (let i = 0; i < bytes.length; i += 3) {
      const n = (bytes[i] << 16) | ((bytes[i + 1] || 0) << 8) | (bytes[i + 2] || 0);
      out += B64[n >> 18] + B64[(n >> 12) & 63];
      out += i + 1 < bytes.length ? B64[(n >> 6) & 63] : "=";
      out += i + 2 < bytes.length ? B64[n & 63] : "=";
    }
    return out;
  }

  function base64Decode(text) {
    let s = String(text).replace(/[\t\n\f\r ]/g, "");
    if (s.length % 4 === 0) s = s.replace(/==?$/, "");
    if (s.length % 4 === 1 || /[^A-Za-z0-9+/]/.test(s)) {
      throw new DOMException("The string to be decoded is not correctly encoded.", "InvalidCharacterError");
    }
    const out = new Uint8Array(Math.floor((s.length * 3) / 4));
    let bits = 0, value = 0, k = 0;
    for (const c of s) {
      value = (value << 6) | B64_INDEX.get(c);
      bits += 6;
      if (bits >= 8) { bits -= 8; out[k++] = (value >> bits) & 0xff; }
    }
    return out;
  }

  function btoa(data) {
    const s = String(data);
    const bytes = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c > 0xff) throw new DOMException("The string to be encoded contains characters outside of the Latin1 range.", "InvalidCharacterError");
      bytes[i] = c;
    }
    return base64Encode(bytes);
  }
  function atob(data) {
    const bytes = base64Decode(data);
    let s = "";
    for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    return s;
  }

  class TextEncoder {
    get encoding() { return "utf-8"; }
    encode(input = "") { return utf8Encode(String(input)); }
  }

  class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      if (!["utf-8", "utf8", "unicode-1-1-utf-8"].includes(String(label).trim().toLowerCase())) {
        throw new RangeError(`The encoding label provided ('${label}') is not supported; only utf-8 is`);
      }
      this.fatal = Boolean(options.fatal);
      this.ignoreBOM = Boolean(options.ignoreBOM);
    }
    get encoding() { return "utf-8"; }
    decode(input) {
      if (input === undefined) return "";
      const text = utf8Decode(toBytes(input, "input"), this.fatal);
      return !this.ignoreBOM && text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
    }
  }

  return { utf8Encode, utf8Decode, toBytes, toHex, fromHex, base64Encode, base64Decode, btoa, atob, TextEncoder, TextDecoder };
})

//@module url
// URL, URLSearchParams (the parsing itself is in the core, for fetch).
(function (g, internals) {
  "use strict";
  const { URL_PATTERN, encodeRuns, removeDotSegments, cleanUrlText, isAbsoluteMatch, urlFields, hrefOf } = internals;


  const formEncode = (s) => encodeURIComponent(s).replace(/%20/g, "+")
    .replace(/[!'()~]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  const percentDecode = (s) => s.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => {
    try { return decodeURIComponent(run); } catch (_) { return run; }
  });
  const formDecode = (s) => percentDecode(s.replace(/\+/g, " "));

  class URLSearchParams {
    constructor(init = "") {
      this._list = [];
      this._url = null;
      if (init instanceof URLSearchParams) this._list = init._list.map((pair) => pair.slice());
      else if (typeof init === "string") this._parse(init);
      else if (init && typeof init[Symbol.iterator] === "function") {
        for (const pair of init) {
          const items = Array.from(pair);
          if (items.length !== 2) throw new TypeError("Each query pair must be an iterable [name, value] tuple");
          this._list.push([String(items[0]), String(items[1])]);
        }
      } else if (init && typeof init === "object") {
        for (const key of Object.keys(init)) this._list.push([key, String(init[key])]);
      } else if (init != null) this._parse(String(init));
    }
    _parse(text) {
      this._list = [];
      for (const part of text.replace(/^\?/, "").split("&")) {
        if (!part) continue;
        const eq = part.indexOf("=");
        const name = eq < 0 ? part : part.slice(0, eq);
        const value = eq < 0 ? "" : part.slice(eq + 1);
        this._list.push([formDecode(name), formDecode(value)]);
      }
    }
    _changed() {
      if (this._url) {
        const query = this.toString();
        this._url._search = query ? "?" + query : "";
      }
    }
    get size() { return this._list.length; }
    append(name, value) { this._list.push([String(name), String(value)]); this._changed(); }
    delete(name, value) {
      name = String(name);
      this._list = this._list.filter(([k, v]) => k !== name || (value !== undefined && v !== String(value)));
      this._changed();
    }
    get(name) {
      const pair = this._list.find(([k]) => k === String(name));
      return pair ? pair[1] : null;
    }
    getAll(name) { return this._list.filter(([k]) => k === String(name)).map(([, v]) => v); }
    has(name, value) {
      return this._list.some(([k, v]) => k === String(name) && (value === undefined || v === String(value)));
    }
    set(name, value) {
      name = String(name);
      const index = this._list.findIndex(([k]) => k === name);
      if (index < 0) this._list.push([name, String(value)]);
      else {
        this._list[index][1] = String(value);
        this._list = this._list.filter(([k], i) => k !== name || i === index);
      }
      this._changed();
    }
    sort() {
      this._list = this._list.map((pair, i) => [pair, i])
        .sort((a, b) => (a[0][0] < b[0][0] ? -1 : a[0][0] > b[0][0] ? 1 : a[1] - b[1]))
        .map(([pair]) => pair);
      this._changed();
    }
    forEach(callback, thisArg) { for (const [k, v] of this._list) callback.call(thisArg, v, k, this); }
    *entries() { for (const [k, v] of this._list) yield [k, v]; }
    *keys() { for (const [k] of this._list) yield k; }
    *values() { for (const [, v] of this._list) yield v; }
    [Symbol.iterator]() { return this.entries(); }
    toString() { return this._list.map(([k, v]) => formEncode(k) + "=" + formEncode(v)).join("&"); }
  }

  function resolveReference(ref, base) {
    if (ref.startsWith("//")) return base.protocol + ref;
    const authority = base.protocol + (base._hostname !== null ? "//" + base._userinfo() + base.host : "");
    if (ref.startsWith("/")) return authority + ref;
    if (ref.startsWith("?")) return authority + base.pathname + ref;
    if (ref.startsWith("#")) return authority + base.pathname + base.search + ref;
    if (ref === "") return authority + base.pathname + base.search;
    return authority + base.pathname.replace(/[^/]*$/, "") + ref;
  }

  class URL {
    constructor(url, base) {
      const text = cleanUrlText(url);
      let match = URL_PATTERN.exec(text);
      if (!isAbsoluteMatch(match)) {
        if (base === undefined) throw new TypeError(`Invalid URL: ${text}`);
        const baseUrl = base instanceof URL ? base : new URL(base);
        match = URL_PATTERN.exec(resolveReference(text, baseUrl));
        if (!match) throw new TypeError(`Invalid URL: ${text}`);
      }
      this._set(match);
    }
    _set(match) {
      Object.assign(this, urlFields(match));
      this._params = null;
    }
    _userinfo() {
      if (!this._username && !this._password) return "";
      return this._username + (this._password ? ":" + this._password : "") + "@";
    }
    get protocol() { return this._protocol; }
    get username() { return this._username; }
    get password() { return this._password; }
    get hostname() { return this._hostname || ""; }
    get port() { return this._port; }
    get host() { return this.hostname + (this._port ? ":" + this._port : ""); }
    get origin() { return this._hostname ? this._protocol + "//" + this.host : "null"; }
    get pathname() { return this._pathname; }
    set pathname(value) { this._pathname = removeDotSegments("/" + encodeRuns(String(value)).replace(/^\//, "")); }
    get search() { return this._search; }
    set search(value) {
      const query = encodeRuns(String(value).replace(/^\?/, ""));
      this._search = query ? "?" + query : "";
      if (this._params) this._params._parse(this._search);
    }
    get hash() { return this._hash; }
    set hash(value) {
      const fragment = encodeRuns(String(value).replace(/^#/, ""));
      this._hash = fragment ? "#" + fragment : "";
    }
    get searchParams() {
      if (!this._params) {
        this._params = new URLSearchParams(this._search);
        this._params._url = this;
      }
      return this._params;
    }
    get href() { return hrefOf(this); }
    set href(value) {
      const match = URL_PATTERN.exec(String(value));
      if (!match) throw new TypeError(`Invalid URL: ${value}`);
      this._set(match);
    }
    toString() { return this.href; }
    toJSON() { return this.href; }
    static canParse(url, base) {
      try { new URL(url, base); return true; } catch (_) { return false; }
    }
  }

  return { URL, URLSearchParams };
})
