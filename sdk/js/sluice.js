/**
 * Write Sluice plugins in JavaScript.
 *
 * A Sluice plugin is a WebAssembly component implementing the `transform` world of
 * `sluice:plugin@0.1.0` (see `wit/plugin.wit`), built with `jco componentize --backend
 * quickjs`. This module turns each batch the host sends (field names once per batch, values by
 * position) into plain objects, calls your function once per event, and turns what it returns
 * back into the batch result:
 *
 *     import { defineTransformer, numberField } from "../../sdk/js/sluice.js";
 *
 *     function double(event, meta) {          // meta: { key, time }
 *       const amount = numberField(event, "amount");
 *       if (amount !== null) event.amount2 = amount * 2;
 *       return event;                         // one event; null drops it; an array flat-maps
 *     }
 *
 *     export const transformer = defineTransformer(double);
 *
 * Values: null -> null, boolean -> boolean, integer and float -> number, text -> string,
 * bytes -> Uint8Array, floats -> Array of numbers, json -> `Json` (the raw text, parsed on
 * demand). A thrown exception fails that event alone (the `err` outcome, with its message);
 * it never traps the component. See README.md beside this file.
 */
import host from "sluice:plugin/host@0.1.0";

const I64_LIMIT = 2 ** 63;
const META = Symbol("sluice.meta");
const NULL = Object.freeze({ tag: "null" });
const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);

/** A per-event error: throw it (or any exception) to fail the event with this message. */
export class PluginError extends Error {}

/** A host call (`lookup`) failed; the message is the host's. */
export class HostError extends PluginError {}

/**
 * A `json` value: nested data kept as its JSON text, so it goes back out unchanged.
 * `.text` is the raw text; `.value` parses it (once). `Json.stringify(value)` makes one.
 * A plain object, or an array that is not all numbers, returned in a field is also sent as
 * `json`.
 */
export class Json {
  #parsed;
  #isParsed = false;

  constructor(text) {
    if (typeof text !== "string") {
      throw new TypeError("Json() takes the JSON text; use Json.stringify(value) for a value");
    }
    this.text = text;
  }

  /** The JSON of a JavaScript value. */
  static stringify(value) {
    return new Json(stringify(value));
  }

  /** The parsed value. */
  get value() {
    if (!this.#isParsed) {
      this.#parsed = JSON.parse(this.text);
      this.#isParsed = true;
    }
    return this.#parsed;
  }

  toString() {
    return this.text;
  }

  toJSON() {
    return this.value;
  }
}

function stringify(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`cannot write ${typeof value} as JSON`);
  return text;
}

/** A number to send as `float` whatever the field held before (e.g. a computed amount). */
export function asFloat(n) {
  return new Typed("float", Number(n));
}

/** A number to send as `integer` (s64); a BigInt is sent as `integer` too. */
export function asInteger(n) {
  if (!Number.isInteger(Number(n))) throw new PluginError(`${n} is not an integer`);
  return new Typed("integer", Number(n));
}

class Typed {
  constructor(tag, val) {
    this.tag = tag;
    this.val = val;
    Object.freeze(this);
  }

  valueOf() {
    return this.val;
  }
}

/** Sets the key and/or time of an output object (by default those of its input event). */
export function withMeta(fields, { key, time } = {}) {
  Object.defineProperty(fields, META, { value: { key, time }, configurable: true });
  return fields;
}

// ---- typed getters, with the same messages as the Rust and Python SDKs --------------------

function present(event, name) {
  const value = event[name];
  return value === undefined ? null : value;
}

/** The field's value; throws `missing field "<name>"` if it is absent or null. */
export function requiredField(event, name) {
  const value = present(event, name);
  if (value === null) throw new PluginError(`missing field "${name}"`);
  return value;
}

/** A number field (integer or float); null if absent or null. */
export function numberField(event, name) {
  return typed(event, name, "number", "a number");
}

/** A text field; null if absent or null. */
export function textField(event, name) {
  return typed(event, name, "string", "text");
}

/** A boolean field; null if absent or null. */
export function booleanField(event, name) {
  return typed(event, name, "boolean", "a boolean");
}

function typed(event, name, type, expected) {
  const value = present(event, name);
  if (value === null || typeof value === type) return value;
  throw new PluginError(`field "${name}" must be ${expected}`);
}

// ---- WIT values <-> JavaScript values ------------------------------------------------------

function decode(value) {
  switch (value.tag) {
    case "null":
      return null;
    case "bytes":
      return value.val instanceof Uint8Array ? value.val : Uint8Array.from(value.val);
    case "floats":
      return Array.from(value.val);
    case "json":
      return new Json(value.val);
    default:
      return value.val;
  }
}

function encodeNumber(name, v, inputTag) {
  if (inputTag === "integer" && Number.isInteger(v) && Math.abs(v) <= I64_LIMIT) {
    return { tag: "integer", val: v };
  }
  return { tag: "float", val: v };
}

/** The WIT value of `v` in field `name`; `inputTag` is the field's type in the input event. */
function encode(name, v, inputTag) {
  if (v === null || v === undefined) return NULL;
  switch (typeof v) {
    case "boolean":
      return { tag: "boolean", val: v };
    case "number":
      return encodeNumber(name, v, inputTag);
    case "bigint":
      if (v < -I64_LIMIT || v >= I64_LIMIT) {
        throw new PluginError(`field "${name}": integer ${v} does not fit in 64 bits`);
      }
      return { tag: "integer", val: Number(v) };
    case "string":
      return { tag: "text", val: v };
    case "object":
      return encodeObject(name, v);
    default:
      throw new PluginError(`field "${name}": cannot send a ${typeof v}`);
  }
}

function encodeObject(name, v) {
  if (v instanceof Typed) return { tag: v.tag, val: v.val };
  if (v instanceof Json) return { tag: "json", val: v.text };
  if (v instanceof Uint8Array) return { tag: "bytes", val: v };
  if (v instanceof ArrayBuffer) return { tag: "bytes", val: new Uint8Array(v) };
  if (v instanceof Float64Array || v instanceof Float32Array) {
    return { tag: "floats", val: Array.from(v) };
  }
  if (Array.isArray(v) && v.every((x) => typeof x === "number")) {
    return { tag: "floats", val: v };
  }
  try {
    return { tag: "json", val: stringify(v) };
  } catch (e) {
    throw new PluginError(`field "${name}": ${messageOf(e)}`);
  }
}

function messageOf(e) {
  if (e instanceof Error) return e.message || e.name;
  return String(e);
}

// ---- the exported `transformer` ------------------------------------------------------------

/**
 * The object to export as `transformer`:
 * `export const transformer = defineTransformer(myFunction, { init, prepare })`.
 *
 * - `event(event, meta)` is called once per event (`meta` is `{ key, time }`) and returns an
 *   object (one output event), null/undefined (drop it) or an array of objects (flat-map);
 *   a thrown exception fails that event alone.
 * - `init(config)` gets the config as an object of strings, once per instance before any
 *   event; a thrown exception refuses the deployment with its message.
 * - `prepare(events, metas)` is called once per batch before its events, e.g. to `lookup`
 *   what the whole batch needs at once; a thrown exception fails every event of the batch.
 * - `reads`: the names of the fields the plugin reads (undefined: all). The host then sends
 *   only those, which makes every call cheaper; the other fields are kept untouched.
 *
 * Output events inherit every field of their input event that they do not carry, so a
 * returned object may hold only the fields it adds or changes; set a field to null to clear it.
 */
export function defineTransformer(event, { init, prepare, reads } = {}) {
  if (typeof event !== "function") throw new TypeError("defineTransformer needs a function");
  let ready = false;
  return {
    init(config) {
      ready = false;
      if (init) {
        try {
          init(Object.fromEntries(config));
        } catch (e) {
          throw messageOf(e);
        }
      }
      ready = true;
    },
    reads() {
      return reads === undefined || reads === null ? undefined : [...reads];
    },
    process(batch) {
      if (!ready) {
        const err = { tag: "err", val: "plugin not initialised" };
        return { fields: batch.fields, outcomes: batch.events.map(() => err) };
      }
      return runBatch(batch, event, prepare);
    },
  };
}

function eventsOf(batch) {
  const fields = batch.fields;
  const events = [];
  const metas = [];
  const originals = [];
  for (const e of batch.events) {
    const obj = {};
    const original = [];
    for (let i = 0; i < fields.length; i++) {
      const value = i < e.values.length ? decode(e.values[i]) : null;
      original.push(value);
      if (fields[i] === "__proto__") {
        Object.defineProperty(obj, "__proto__", { value, enumerable: true, writable: true });
      } else {
        obj[fields[i]] = value;
      }
    }
    events.push(obj);
    metas.push({ key: e.key, time: e.time });
    originals.push(original);
  }
  return { events, metas, originals };
}

function outputsOf(result) {
  if (result === null || result === undefined) return [];
  if (Array.isArray(result)) return result;
  if (typeof result === "object" && !(result instanceof Json)) return [result];
  throw new PluginError(
    `the plugin must return an object, null or an array of objects, not ${typeof result}`,
  );
}

/** Output field names of one batch: input fields keep their order, new ones are appended. */
class Schema {
  constructor(inputFields) {
    this.inputFields = inputFields;
    this.inputIndex = new Map(inputFields.map((name, i) => [name, i]));
    this.names = [];
    this.index = new Map();
  }

  /**
   * [key, time, [[name, witValue]...]] for one output object: only the fields it adds or
   * changes; input fields it leaves unchanged or does not hold are inherited by the host
   * (which also keeps integers above 2^53 exact).
   */
  encode(source, meta, out, original) {
    if (out === null || typeof out !== "object" || Array.isArray(out)) {
      throw new PluginError("each output event must be an object of fields");
    }
    const own = out[META] ?? {};
    const key = own.key ?? meta.key;
    const time = own.time ?? meta.time;
    if (typeof key !== "string") throw new PluginError("the event key must be a string");
    if (!Number.isInteger(time)) {
      throw new PluginError("the event time must be an integer (microseconds since the epoch)");
    }
    const pairs = [];
    const add = (name) => {
      const i = this.inputIndex.get(name);
      const inputTag = i === undefined ? undefined : source.values[i]?.tag;
      pairs.push([name, encode(name, out[name], inputTag)]);
    };
    this.inputFields.forEach((name, i) => {
      if (Object.prototype.hasOwnProperty.call(out, name) && !Object.is(out[name], original[i])) add(name);
    });
    for (const name of Object.keys(out)) {
      if (!this.inputIndex.has(name)) add(name);
    }
    return [key, time, pairs];
  }

  position(name) {
    let i = this.index.get(name);
    if (i === undefined) {
      i = this.names.length;
      this.index.set(name, i);
      this.names.push(name);
    }
    return i;
  }
}

function runBatch(batch, handle, prepare) {
  const { events, metas, originals } = eventsOf(batch);
  if (prepare) {
    try {
      prepare(events, metas);
    } catch (e) {
      const err = { tag: "err", val: messageOf(e) };
      return { fields: batch.fields, outcomes: events.map(() => err) };
    }
  }
  const schema = new Schema(batch.fields);
  const pending = events.map((event, n) => {
    try {
      const source = batch.events[n];
      const encoded = outputsOf(handle(event, metas[n])).map((out) =>
        schema.encode(source, metas[n], out, originals[n]),
      );
      return encoded.map(([key, time, pairs]) => [
        key,
        time,
        pairs.map(([name, value]) => [schema.position(name), value]),
      ]);
    } catch (e) {
      return { tag: "err", val: messageOf(e) };
    }
  });
  // A field this event does not carry but another one does: resend its input value (or
  // null for a new field). Fields past the last one carried are simply not sent.
  const inputIndex = schema.inputIndex;
  const outcomes = pending.map((item, n) => {
    if (!Array.isArray(item)) return item;
    const source = batch.events[n];
    const val = item.map(([key, time, placed]) => {
      const width = placed.reduce((w, [i]) => Math.max(w, i + 1), 0);
      const values = new Array(width).fill(undefined);
      for (const [i, value] of placed) values[i] = value;
      for (let i = 0; i < width; i++) {
        if (values[i] === undefined) {
          const j = inputIndex.get(schema.names[i]);
          values[i] = (j === undefined ? undefined : source.values[j]) ?? NULL;
        }
      }
      return { key, time, values };
    });
    return { tag: "ok", val };
  });
  return { fields: schema.names, outcomes };
}

// ---- globals a QuickJS component lacks -----------------------------------------------------

// `console` does not exist in QuickJS: send its lines to the host's log.
if (typeof globalThis.console === "undefined") {
  const text = (x) => {
    if (typeof x === "string") return x;
    try {
      return JSON.stringify(x) ?? String(x);
    } catch {
      return String(x);
    }
  };
  const to = (level) => (...args) => log(level, args.map(text).join(" "));
  globalThis.console = {
    log: to("info"),
    info: to("info"),
    warn: to("warn"),
    error: to("error"),
    debug: to("debug"),
    trace: to("trace"),
  };
}

// ---- host imports --------------------------------------------------------------------------

/** Writes a line to the host's log; `level` is "trace", "debug", "info", "warn" or "error". */
export function log(level, message) {
  const name = level === "warning" ? "warn" : String(level).toLowerCase();
  if (!LEVELS.has(name)) throw new TypeError(`unknown log level ${JSON.stringify(level)}`);
  host.log(name, String(message));
}

/**
 * The online features of several entities of `featureSet` in one host call: one entry per
 * key, in order, an object of feature name -> value (as in events), or null for an entity
 * with no features. Throws `HostError` when the host cannot answer.
 */
export function lookup(featureSet, keys) {
  let found;
  try {
    found = host.lookup(featureSet, Array.from(keys));
  } catch (e) {
    throw new HostError(hostMessage(e));
  }
  return found.map((fields) => {
    if (fields === null || fields === undefined) return null;
    const obj = {};
    for (const f of fields) {
      Object.defineProperty(obj, f.name, {
        value: decode(f.value),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return obj;
  });
}

function hostMessage(e) {
  if (typeof e === "string") return e;
  if (e && typeof e === "object" && "payload" in e) return String(e.payload);
  return messageOf(e);
}
