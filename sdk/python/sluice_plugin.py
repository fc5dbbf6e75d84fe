"""Write Sluice plugins in Python.

A Sluice plugin is a WebAssembly component implementing the `transform` world of
`sluice:plugin@0.1.0` (see `wit/plugin.wit`), built with componentize-py. This module turns
each batch the host sends (field names once per batch, values by position) into `Event`s,
dicts of plain Python values, calls your function once per event, and turns what it returns
back into the batch result::

    import sluice_plugin as sluice

    def double(event):
        if event.get("amount") is not None:
            event["amount2"] = event.number("amount") * 2
        return event                      # one event; None drops it; a list flat-maps

    Transformer = sluice.transformer(double)

Values: null -> None, boolean -> bool, integer -> int, float -> float, text -> str,
bytes -> bytes, floats -> list[float], json -> `Json` (the raw text, parsed on demand).
An exception raised by your code fails that event alone (the `err` outcome, with the
exception's message); it never traps the component. See README.md beside this file.
"""

import json

from componentize_py_types import Err, Ok
from wit_world.imports import host as _host
from wit_world.imports import types as _t

__all__ = [
    "Event",
    "HostError",
    "Json",
    "Level",
    "PluginError",
    "log",
    "lookup",
    "transformer",
]

Level = _host.Level
"""Severity of a `log` line (`Level.INFO`, ...); `log` also takes the names as strings."""

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1


class PluginError(Exception):
    """A per-event error: raise it (or any exception) to fail the event with this message."""


class MissingField(PluginError, KeyError):
    """`event[name]` for a field the batch does not have: `missing field "<name>"`."""

    def __str__(self):
        return str(self.args[0])


class HostError(PluginError):
    """A host call (`lookup`) failed; the message is the host's."""


class Json:
    """A `json` value: nested data kept as its JSON text, so it goes back out unchanged.

    `.text` is the raw text; `.value` parses it (once). `Json.dumps(obj)` makes one from a
    Python object. A dict, or a list that is not all numbers, returned in a field is also
    sent as `json`.
    """

    __slots__ = ("text", "_parsed")

    def __init__(self, text):
        if not isinstance(text, str):
            raise TypeError("Json() takes the JSON text; use Json.dumps(obj) for an object")
        self.text = text
        self._parsed = _UNPARSED

    @classmethod
    def dumps(cls, obj):
        """The JSON of a Python object (compact, UTF-8, no NaN or infinity)."""
        return cls(_dumps(obj))

    @property
    def value(self):
        """The parsed value (dict, list, str, int, float, bool or None)."""
        if self._parsed is _UNPARSED:
            self._parsed = json.loads(self.text)
        return self._parsed

    def __eq__(self, other):
        return isinstance(other, Json) and other.text == self.text

    def __hash__(self):
        return hash(self.text)

    def __repr__(self):
        return f"Json({self.text!r})"

    def __str__(self):
        return self.text


_UNPARSED = object()


def _dumps(obj):
    def default(o):
        if isinstance(o, Json):
            return o.value
        raise TypeError(f"{type(o).__name__} is not JSON serializable")

    return json.dumps(
        obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default
    )


class Event(dict):
    """One event: a dict of field name -> value, plus `.key` (the entity key, str) and
    `.time` (event time, int microseconds since the Unix epoch, UTC).

    Every field of the batch is present (None when null); `event[name]` for any other name
    raises `missing field "<name>"`. Returning a plain dict keeps the input event's key and
    time; return `Event(fields, key=..., time=...)` to change them.
    """

    __slots__ = ("key", "time", "_sluice_input")

    def __init__(self, fields=(), key=None, time=None):
        super().__init__(fields)
        self.key = key
        self.time = time

    def __missing__(self, name):
        raise MissingField(f'missing field "{name}"')

    def __repr__(self):
        return f"Event(key={self.key!r}, time={self.time!r}, {dict.__repr__(self)})"

    def copy(self):
        """A shallow copy that keeps the key and time."""
        return Event(self, key=self.key, time=self.time)

    def require(self, name):
        """The field's value; `missing field "<name>"` if it is absent or null."""
        value = self.get(name)
        if value is None:
            raise PluginError(f'missing field "{name}"')
        return value

    def number(self, name):
        """An integer or float field as float; None if null or absent."""
        value = self.get(name)
        if value is None:
            return None
        if _is_number(value):
            return float(value)
        raise PluginError(f'field "{name}" must be a number')

    def integer(self, name):
        """An integer field; None if null or absent."""
        return self._typed(name, int, "an integer")

    def text(self, name):
        """A text field; None if null or absent."""
        return self._typed(name, str, "text")

    def boolean(self, name):
        """A boolean field; None if null or absent."""
        return self._typed(name, bool, "a boolean")

    def _typed(self, name, kind, expected):
        value = self.get(name)
        if value is None or type(value) is kind:
            return value
        raise PluginError(f'field "{name}" must be {expected}')


# ---- WIT values <-> Python values ---------------------------------------------------------

_DECODE = {
    _t.Value_Null: lambda v: None,
    _t.Value_Boolean: lambda v: v.value,
    _t.Value_Integer: lambda v: v.value,
    _t.Value_Float: lambda v: v.value,
    _t.Value_Text: lambda v: v.value,
    _t.Value_Bytes: lambda v: bytes(v.value),
    _t.Value_Floats: lambda v: list(v.value),
    _t.Value_Json: lambda v: Json(v.value),
}

_NULL = _t.Value_Null()


def _decode(value):
    return _DECODE[type(value)](value)


def _is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _encode(name, v):
    """The WIT value of a Python value returned in field `name`."""
    if v is None:
        return _NULL
    if isinstance(v, bool):
        return _t.Value_Boolean(v)
    if isinstance(v, int):
        if not _I64_MIN <= v <= _I64_MAX:
            raise PluginError(f'field "{name}": integer {v} does not fit in 64 bits')
        return _t.Value_Integer(int(v))
    if isinstance(v, float):
        return _t.Value_Float(float(v))
    if isinstance(v, str):
        return _t.Value_Text(str(v))
    if isinstance(v, Json):
        return _t.Value_Json(v.text)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return _t.Value_Bytes(bytes(v))
    if isinstance(v, (list, tuple)) and all(_is_number(x) for x in v):
        return _t.Value_Floats([float(x) for x in v])
    if isinstance(v, (list, tuple, dict)):
        try:
            return _t.Value_Json(_dumps(v))
        except (TypeError, ValueError) as exc:
            raise PluginError(f'field "{name}": {exc}') from None
    raise PluginError(
        f'field "{name}": cannot send a {type(v).__name__} '
        "(use None, bool, int, float, str, bytes, list of floats, dict or Json)"
    )


def _message(exc):
    return str(exc) or type(exc).__name__


# ---- the exported `transformer` -----------------------------------------------------------


def transformer(handle, *, init=None, prepare=None, reads=None):
    """The `Transformer` class componentize-py exports: assign it in your app module,
    `Transformer = sluice.transformer(my_function, init=my_init)`.

    - `handle(event: Event)` is called once per event and returns a dict (one output event),
      None (drop it) or a list of dicts (flat-map); an exception fails that event alone.
    - `init(config: dict[str, str])` is called once per instance before any event; an
      exception refuses the deployment with its message.
    - `prepare(events: list[Event])` is called once per batch before its events, e.g. to
      `lookup` what the whole batch needs at once; an exception fails every event of the batch.
    - `reads`: the names of the fields the plugin reads (None: all). The host then sends only
      those, which makes every call cheaper; the other fields are kept in the output untouched.

    Output events inherit every field of their input event that they do not carry, so a
    returned dict may hold only the fields it adds or changes; set a field to None to clear it.
    """
    if reads is not None and (isinstance(reads, str) or not all(isinstance(r, str) for r in reads)):
        raise TypeError("reads must be a list of field names")
    if not callable(handle):
        raise TypeError("transformer() needs the per-event function")
    state = {"ready": False}

    class Transformer:
        def init(self, config):
            state["ready"] = False
            if init is not None:
                try:
                    init(dict(config))
                except Exception as exc:  # noqa: BLE001 - every error refuses the deployment
                    raise Err(_message(exc)) from None
            state["ready"] = True

        def reads(self):
            return None if reads is None else list(reads)

        def process(self, batch):
            if not state["ready"]:
                err = Err("plugin not initialised")
                return _t.Processed(fields=list(batch.fields), outcomes=[err] * len(batch.events))
            return _run_batch(batch, handle, prepare)

    Transformer.__qualname__ = Transformer.__name__ = "Transformer"
    return Transformer


def _events_of(batch):
    fields = batch.fields
    width = len(fields)
    events = []
    for e in batch.events:
        values = [_decode(v) for v in e.values[:width]]
        if len(values) < width:
            values.extend([None] * (width - len(values)))
        ev = Event(zip(fields, values, strict=True))
        ev.key = e.key
        ev.time = e.time
        ev._sluice_input = (e, values)  # the raw event and its decoded values, to spot changes
        events.append(ev)
    return events


def _outputs(result):
    if result is None:
        return ()
    if isinstance(result, dict):
        return (result,)
    if isinstance(result, (str, bytes)) or not hasattr(result, "__iter__"):
        raise PluginError(
            f"the plugin must return a dict, None or a list of dicts, not {type(result).__name__}"
        )
    return result


class _Schema:
    """The output field names of a batch, in first-seen order."""

    def __init__(self, input_fields=()):
        self.names = []
        self.index = {}
        self.inputs = {name: i for i, name in enumerate(input_fields)}

    def encode(self, source, out):
        """(key, time, pairs) for one output dict: only the fields it adds or changes; input
        fields it leaves unchanged or does not hold are inherited by the host untouched."""
        key = out.key if isinstance(out, Event) and out.key is not None else source.key
        time = out.time if isinstance(out, Event) and out.time is not None else source.time
        if not isinstance(key, str):
            raise PluginError(f"the event key must be a str, not {type(key).__name__}")
        if isinstance(time, bool) or not isinstance(time, int) or not _I64_MIN <= time <= _I64_MAX:
            raise PluginError("the event time must be an int (microseconds since the epoch)")
        original = source._sluice_input[1]
        inputs = self.inputs
        pairs = []
        for name, v in out.items():
            i = inputs.get(name)
            if i is not None and v is original[i]:
                continue
            if not isinstance(name, str):
                raise PluginError(f"field names must be str, not {type(name).__name__}")
            pairs.append((name, _encode(name, v)))
        return key, time, pairs

    def position(self, name):
        i = self.index.get(name)
        if i is None:
            i = self.index[name] = len(self.names)
            self.names.append(name)
        return i


def _run_batch(batch, handle, prepare):
    events = _events_of(batch)
    if prepare is not None:
        try:
            prepare(events)
        except Exception as exc:  # noqa: BLE001 - fails the batch's events, never traps
            err = Err(_message(exc))
            return _t.Processed(fields=list(batch.fields), outcomes=[err] * len(events))
    schema = _Schema(batch.fields)
    pending = []  # per input event: list of (key, time, [(position, value)]) or Err
    for ev in events:
        try:
            encoded = [schema.encode(ev, out) for out in _outputs(handle(ev))]
        except Exception as exc:  # noqa: BLE001 - a per-event error, never a trap
            pending.append(Err(_message(exc)))
            continue
        pending.append(
            [
                (key, time, [(schema.position(n), v) for n, v in pairs])
                for key, time, pairs in encoded
            ]
        )
    # A field this event does not carry but another one does: resend its input value (or
    # null for a new field). Fields past the last one carried are simply not sent.
    names = schema.names
    inputs = schema.inputs
    outcomes = []
    for ev, item in zip(events, pending):
        if isinstance(item, Err):
            outcomes.append(item)
            continue
        raw = ev._sluice_input[0].values
        out_events = []
        for key, time, placed in item:
            width = max((i for i, _ in placed), default=-1) + 1
            values = [None] * width
            for i, v in placed:
                values[i] = v
            for i in range(width):
                if values[i] is None:
                    j = inputs.get(names[i])
                    values[i] = raw[j] if j is not None and j < len(raw) else _NULL
            out_events.append(_t.Event(key=key, time=time, values=values))
        outcomes.append(Ok(out_events))
    return _t.Processed(fields=schema.names, outcomes=outcomes)


# ---- host imports ------------------------------------------------------------------------

_LEVELS = {
    "trace": Level.TRACE,
    "debug": Level.DEBUG,
    "info": Level.INFO,
    "warn": Level.WARN,
    "warning": Level.WARN,
    "error": Level.ERROR,
}


def log(level, message):
    """Writes a line to the host's log. `level` is a `Level` or one of "trace", "debug",
    "info", "warn", "error"."""
    if not isinstance(level, Level):
        try:
            level = _LEVELS[str(level).lower()]
        except KeyError:
            raise ValueError(f"unknown log level {level!r}") from None
    _host.log(level, str(message))


def lookup(feature_set, keys):
    """The online features of several entities of `feature_set` in one host call: one entry
    per key, in order, a dict of feature name -> value (as in events), or None for an entity
    with no features. Raises `HostError` when the host cannot answer."""
    try:
        found = _host.lookup(feature_set, list(keys))
    except Err as err:
        raise HostError(str(err.value)) from None
    return [
        None if fields is None else {f.name: _decode(f.value) for f in fields} for fields in found
    ]
