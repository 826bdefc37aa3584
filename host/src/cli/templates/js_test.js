import { test } from "node:test";
import assert from "node:assert/strict";
import { TestHost, testEvent } from "sluice/testing";
import { handle } from "../src/index.js";

test("counts per key", () => {
  const host = TestHost.install();
  for (const key of ["a", "b", "a"]) {
    assert.equal(host.handle(handle, testEvent("{{name}}-in", "thing.happened", {}, { key })), undefined);
  }
  assert.equal(host.stateJson("count/a"), 2);
  assert.equal(host.emitted.length, 3);
});
