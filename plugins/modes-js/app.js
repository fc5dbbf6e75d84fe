// Test-only: the `modes` plugin in JavaScript (see plugins/modes/src/lib.rs).
import { asInteger, defineTransformer, PluginError, textField, withMeta } from "../../sdk/js/sluice.js";

function handle(event, meta) {
  const mode = textField(event, "mode") ?? "keep";
  switch (mode) {
    case "drop":
      return null;
    case "split":
      return [{ ...event, part: asInteger(1) }, { ...event, part: asInteger(2) }]; // a new field: say it is an integer
    case "fail":
      throw new PluginError("failed on purpose");
    case "add":
      return { extra: "yes" };
    case "clear":
      event.note = null;
      return event;
    case "rekey":
      return withMeta({}, { key: meta.key + "!", time: meta.time + 1 });
    default:
      return event;
  }
}

export const transformer = defineTransformer(handle);
