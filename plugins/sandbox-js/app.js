// Test-only: reports what the sandbox lets a JavaScript plugin reach (the clock).
import { defineTransformer } from "../../sdk/js/sluice.js";

function probe() {
  return { clock: Date.now() / 1000, date: new Date().getUTCFullYear() };
}

export const transformer = defineTransformer(probe);
