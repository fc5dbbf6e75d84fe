// currency: adds `amount_usd`, the event's `amount` in US dollars at the configured rates.
//
// Config: `rates`, a JSON object of currency code to USD rate per unit, e.g.
// `{"USD": 1.0, "EUR": 1.08}`. Same behaviour as the Rust and Python versions.
import {
  asFloat,
  defineTransformer,
  numberField,
  PluginError,
  textField,
} from "../../sdk/js/sluice.js";

const RATES_HELP = "a JSON object of currency code to USD rate";
let rates = new Map();

function jsonKind(value) {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return { string: "a string", boolean: "a boolean", number: "a number" }[typeof value];
}

function parseRates(text) {
  const parsed = JSON.parse(text);
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new Error(`found ${jsonKind(parsed)}, not an object`);
  }
  const table = new Map();
  for (const [code, rate] of Object.entries(parsed)) {
    if (typeof rate !== "number") throw new Error(`rate of "${code}" is not a number`);
    if (!Number.isFinite(rate)) throw new Error(`rate of "${code}" is not finite`);
    table.set(code, rate);
  }
  return table;
}

function setup(config) {
  const text = config.rates;
  if (text === undefined) {
    throw new PluginError(`config key "rates" is required: ${RATES_HELP}`);
  }
  try {
    rates = parseRates(text);
  } catch (e) {
    throw new PluginError(`config key "rates" must be ${RATES_HELP}: ${e.message}`);
  }
}

function convert(event) {
  const currency = textField(event, "currency"); // throws `field "currency" must be text`
  if (currency === null) throw new PluginError('missing field "currency"');
  const rate = rates.get(currency);
  if (rate === undefined) throw new PluginError(`unknown currency "${currency}"`);
  const amount = numberField(event, "amount"); // throws `field "amount" must be a number`
  event.amount_usd = amount === null ? null : asFloat(amount * rate);
  return event;
}

export const transformer = defineTransformer(convert, { init: setup, reads: ["amount", "currency"] });
