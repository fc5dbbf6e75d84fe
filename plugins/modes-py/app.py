"""Test-only: the `modes` plugin in Python (see plugins/modes/src/lib.rs)."""

import sluice_plugin as sluice


def handle(event):
    mode = event.text("mode") or "keep"
    if mode == "drop":
        return None
    if mode == "split":
        return [{**event, "part": 1}, {**event, "part": 2}]
    if mode == "fail":
        raise sluice.PluginError("failed on purpose")
    if mode == "add":
        return {"extra": "yes"}
    if mode == "clear":
        event["note"] = None
        return event
    if mode == "rekey":
        return sluice.Event({}, key=event.key + "!", time=event.time + 1)
    return event


Transformer = sluice.transformer(handle)
