import { test } from "node:test";
import assert from "node:assert/strict";
import { TestHost, testEvent } from "sluice/testing";
import { handle } from "../src/index.js";

test("keeps a running total per customer", () => {
  const host = TestHost.install();
  for (const [customer, amount] of [["c1", 5], ["c2", 7], ["c1", -2]]) {
    assert.equal(host.handle(handle, testEvent("orders", "order.created", { customer, amount })), undefined);
  }
  assert.deepEqual(host.stateJson("total/c1"), { total: 3, count: 2 });
  assert.equal(host.emitted.length, 3);
  assert.equal(host.emitted[2].json().total, 3);
  assert.equal(new TextDecoder().decode(host.emitted[2].key), "c1");
});

test("rejects an order that is not one, and keeps nothing of it", () => {
  const host = TestHost.install();
  const [kind, message] = host.handle(handle, testEvent("orders", "order.created", "not json"));
  assert.equal(kind, "reject");
  assert.match(message, /not JSON/);
  assert.equal(host.emitted.length, 0);
  assert.equal(host.state.size, 0);
});
