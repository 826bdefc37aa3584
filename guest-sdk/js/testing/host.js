// An in-memory Sluice host for unit tests of JavaScript modules (see ../testing.mjs).
//
//   import { TestHost, testEvent } from "sluice/testing";
//   import { handle } from "../src/index.js";
//   const host = TestHost.install({ "min-amount": "100" });
//   assert.equal(host.handle(handle, testEvent("orders", "order.created", { amount: 150 })), undefined);
//   assert.equal(host.emitted.length, 1);
//
// Each `host.handle` is one event: its writes and emits are kept only if it
// succeeds, as in the real host. It returns undefined, or ["retry"|"reject", message].
import { run } from "sluice";

const enc = new TextEncoder();
const dec = new TextDecoder();
const k = (bytes) => Buffer.from(bytes).toString("latin1");
const unk = (s) => new Uint8Array(Buffer.from(s, "latin1"));

let counter = 0;

/** A test event; `data` may be an object (JSON), a string or bytes. */
export function testEvent(topic, type, data, { key, id, source = "/test" } = {}) {
  counter += 1;
  const bytes =
    typeof data === "string" ? enc.encode(data) : data instanceof Uint8Array ? data : enc.encode(JSON.stringify(data));
  return {
    id: id ?? `test-${counter}`,
    source,
    type,
    subject: undefined,
    time: undefined,
    datacontenttype: "application/json",
    dataschema: undefined,
    data: bytes,
    key: key === undefined ? undefined : enc.encode(key),
    headers: [],
    topic,
    partition: 0,
    offset: BigInt(counter),
  };
}

export class TestHost {
  constructor(config = {}) {
    this.state = new Map(); // committed: latin1 key -> Uint8Array
    this.emitted = [];
    this.logs = [];
    this.configValues = config;
    this.overlay = new Map();
    this.pending = [];
    const host = this;
    this.api = {
      state: {
        get: (key) => {
          const s = k(key);
          if (host.overlay.has(s)) return host.overlay.get(s) ?? undefined;
          return host.state.get(s);
        },
        set: (key, value) => void host.overlay.set(k(key), value),
        delete: (key) => void host.overlay.set(k(key), null),
        scanPrefix: (prefix, startAfter, limit) => {
          const merged = new Map([...host.state, ...host.overlay]);
          const p = k(prefix);
          const after = startAfter === undefined ? undefined : k(startAfter);
          const keys = [...merged.keys()]
            .filter((x) => merged.get(x) !== null && x.startsWith(p) && (after === undefined || x > after))
            .sort();
          const page = keys.slice(0, limit);
          return {
            entries: page.map((x) => [unk(x), merged.get(x)]),
            next: keys.length > limit ? unk(page[page.length - 1]) : undefined,
          };
        },
      },
      emit: { emit: (e) => void host.pending.push(e) },
      log: { log: (level, message) => void host.logs.push([level, message]) },
      config: {
        get: (key) => host.configValues[key],
        all: () => Object.entries(host.configValues).sort(),
      },
    };
  }

  /** A fresh host that the `sluice` helpers now talk to. */
  static install(config = {}) {
    const host = new TestHost(config);
    globalThis.__sluiceTestHost = host.api;
    return host;
  }

  /** Run one event through `handle`; commit its effects only if it succeeds. */
  handle(handle, event) {
    this.overlay = new Map();
    this.pending = [];
    let outcome;
    try {
      run(handle, event);
    } catch (e) {
      outcome = [e.tag, e.val];
    }
    if (outcome === undefined) {
      for (const [key, v] of this.overlay) {
        if (v === null) this.state.delete(key);
        else this.state.set(key, v);
      }
      this.emitted.push(...this.pending.map((e) => ({ ...e, json: () => JSON.parse(dec.decode(e.data)) })));
    }
    this.overlay = new Map();
    this.pending = [];
    return outcome;
  }

  /** A committed state value parsed as JSON. */
  stateJson(key) {
    const v = this.state.get(k(enc.encode(key)));
    return v === undefined ? undefined : JSON.parse(dec.decode(v));
  }
}
