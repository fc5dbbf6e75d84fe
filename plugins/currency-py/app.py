"""currency: adds `amount_usd`, the event's `amount` in US dollars at the configured rates.

Config: `rates`, a JSON object of currency code to USD rate per unit, e.g.
`{"USD": 1.0, "EUR": 1.08}`. Same behaviour as the Rust and JavaScript versions.
"""

import json
import math

import sluice_plugin as sluice
from sluice_plugin import PluginError

RATES_HELP = "a JSON object of currency code to USD rate"
rates = {}


def _reject_constant(name):
    raise ValueError(f"{name} is not a number")


def _json_kind(value):
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "null" if value is None else "a number"


def setup(config):
    text = config.get("rates")
    if text is None:
        raise PluginError(f'config key "rates" is required: {RATES_HELP}')
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
        if not isinstance(parsed, dict):
            raise ValueError(f"found {_json_kind(parsed)}, not an object")
        table = {}
        for code, rate in parsed.items():
            if isinstance(rate, bool) or not isinstance(rate, (int, float)):
                raise ValueError(f'rate of "{code}" is not a number')
            table[code] = float(rate)
            if not math.isfinite(table[code]):
                raise ValueError(f'rate of "{code}" is not finite')
    except (ValueError, OverflowError) as exc:
        raise PluginError(f'config key "rates" must be {RATES_HELP}: {exc}') from None
    rates.clear()
    rates.update(table)


def convert(event):
    currency = event.text("currency")  # raises `field "currency" must be text`
    if currency is None:
        raise PluginError('missing field "currency"')
    rate = rates.get(currency)
    if rate is None:
        raise PluginError(f'unknown currency "{currency}"')
    amount = event.number("amount")  # raises `field "amount" must be a number`
    event["amount_usd"] = None if amount is None else amount * rate
    return event


Transformer = sluice.transformer(convert, init=setup, reads=["amount", "currency"])
