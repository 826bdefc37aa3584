// Tries what a sandboxed module must not be able to do, and reports each
// outcome as an event (the test asserts every one failed inside the guest).
import { emit, config, log } from "sluice";

function attempt(f) {
  try {
    return `succeeded: ${f()}`;
  } catch (e) {
    return `failed: ${e && e.message ? e.message : e}`;
  }
}

export function handle(event) {
  const port = config.get("port");
  const tried = {
    // StarlingMonkey has no filesystem API; Node's is not there either.
    file: attempt(() => globalThis.require("fs").readFileSync("/etc/hostname", "utf8")),
    // Outgoing HTTP is not built in (componentize-js --disable http).
    socket: attempt(() => {
      const pending = globalThis.fetch(`http://127.0.0.1:${port}/`);
      pending.catch(() => {}); // (on Node.js, in unit tests, it is a real request)
      return "a request was started";
    }),
    env: attempt(() => JSON.stringify(globalThis.process.env)),
  };
  log.info(`snoop-js tried ${Object.keys(tried).length} things`);
  emit("snoop-out", "snoop.result", { key: "js", json: tried });
}
