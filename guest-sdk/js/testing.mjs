// Run a module's tests on Node.js with an in-memory host:
//   node --import <sdk>/js/testing.mjs --test test/
// Resolves `sluice` to the helpers, `sluice/testing` to the test host, and the
// `sluice:processor/*` imports to that host.
import { register } from "node:module";

register("./testing/hooks.mjs", import.meta.url);
