import { test } from "node:test";
import assert from "node:assert/strict";
import { TestHost, testEvent } from "sluice/testing";
import { handle } from "../src/index.js";

test("reports one outcome per attempt", () => {
  const host = TestHost.install({ port: "1" });
  assert.equal(host.handle(handle, testEvent("snoop-in", "go", {})), undefined);
  assert.deepEqual(Object.keys(host.emitted[0].json()).sort(), ["env", "file", "socket"]);
});
