// Sluice module helpers for JavaScript and TypeScript.
//
// A module is one file exporting `handle(event)`:
//
//   import { state, emit, Reject } from "sluice";
//   export function handle(event) {
//     const order = event.json();                     // Reject if not JSON
//     const t = state.getJson(`total/${order.customer}`) ?? { total: 0 };
//     t.total += order.amount;
//     state.setJson(`total/${order.customer}`, t);
//     emit("totals", "total.updated", { key: order.customer, json: t });
//   }
//
// Return normally: the event's state writes and emits commit together.
// Throw `new Retry(msg)` for a transient failure (retried with backoff),
// `new Reject(msg)` for a permanent one (dead-lettered); any other exception
// is a reject with its message. The build (scripts/build-module.sh) bundles
// this file with the module and wraps `handle` with `run` below.

import * as wstate from "sluice:processor/state@0.1.0";
import * as wemit from "sluice:processor/emit@0.1.0";
import * as wlog from "sluice:processor/log@0.1.0";
import * as wconfig from "sluice:processor/config@0.1.0";

// A module has no network: the runtime is built without outgoing HTTP, and
// `fetch` fails here, inside the module, with a reason (instead of trapping).
globalThis.fetch = () => {
  throw new TypeError("fetch is not available: Sluice modules have no network access");
};

const enc = new TextEncoder();
const dec = new TextDecoder();
const bytes = (v) => (typeof v === "string" ? enc.encode(v) : v);

/** A transient failure: the host retries the event in place, with backoff. */
export class Retry extends Error {
  constructor(message) {
    super(message);
    this.name = "Retry";
  }
}

/** A permanent failure: the event goes to the module's dead-letter topic. */
export class Reject extends Error {
  constructor(message) {
    super(message);
    this.name = "Reject";
  }
}

/** The module's state, scoped to the event's partition. Keys and values are strings or bytes. */
export const state = {
  get: (key) => wstate.get(bytes(key)),
  getString(key) {
    const v = wstate.get(bytes(key));
    return v === undefined ? undefined : dec.decode(v);
  },
  getJson(key) {
    const v = wstate.get(bytes(key));
    return v === undefined ? undefined : JSON.parse(dec.decode(v));
  },
  set: (key, value) => wstate.set(bytes(key), bytes(value)),
  setJson: (key, value) => wstate.set(bytes(key), enc.encode(JSON.stringify(value))),
  delete: (key) => wstate.delete(bytes(key)),
  /** One page of keys starting with `prefix`: `{ entries: [[key, value]], next }`. */
  scan: (prefix, { startAfter, limit = 100 } = {}) =>
    wstate.scanPrefix(bytes(prefix), startAfter === undefined ? undefined : bytes(startAfter), limit),
};

/**
 * Emit an event to `topic` (declared under [[produce]] in module.toml).
 * `json` is serialized with JSON.stringify; `data` is a string or bytes.
 */
export function emit(topic, type, { key, json, data, subject, datacontenttype, headers = [] } = {}) {
  const payload = json !== undefined ? enc.encode(JSON.stringify(json)) : bytes(data ?? new Uint8Array());
  wemit.emit({
    topic,
    type,
    key: key === undefined ? undefined : bytes(key),
    data: payload,
    subject,
    datacontenttype,
    headers: headers.map(([n, v]) => [n, bytes(v)]),
  });
}

/** The module's [config] table: strings as written, other values as JSON text. */
export const config = {
  get: (key) => wconfig.get(key),
  getJson(key) {
    const v = wconfig.get(key);
    return v === undefined ? undefined : JSON.parse(v);
  },
  all: () => wconfig.all(),
};

/** Leveled lines in the host's log, tagged with the module and event id. */
export const log = Object.fromEntries(
  ["trace", "debug", "info", "warn", "error"].map((l) => [l, (msg) => wlog.log(l, String(msg))]),
);

/** The event a handler gets: the record's fields plus `json()`, `text()` and `keyString`. */
function wrap(raw) {
  return {
    ...raw,
    keyString: raw.key === undefined ? undefined : dec.decode(raw.key),
    text: () => dec.decode(raw.data),
    json() {
      try {
        return JSON.parse(dec.decode(raw.data));
      } catch (e) {
        throw new Reject(`event ${raw.id} data is not JSON: ${e.message}`);
      }
    },
  };
}

/** Call `handle` on one event and turn its outcome into the WIT result. */
export function run(handle, raw) {
  try {
    handle(wrap(raw));
  } catch (e) {
    if (e instanceof Retry) throw { tag: "retry", val: e.message };
    if (e instanceof Reject) throw { tag: "reject", val: e.message };
    throw { tag: "reject", val: `uncaught ${e && e.name ? e.name : "exception"}: ${e && e.message ? e.message : e}` };
  }
}
