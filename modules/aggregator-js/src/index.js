// Stateful aggregator: keeps a running total and count per customer and emits
// a `total.updated` event with the new values after every order. The same
// logic as modules/aggregator (Rust) and modules/aggregator-py (Python).
import { state, emit, Reject } from "sluice";

export function handle(event) {
  const order = event.json();
  if (typeof order.customer !== "string" || !Number.isInteger(order.amount)) {
    throw new Reject(`event ${event.id} data is not the expected JSON: needs "customer" (string) and "amount" (integer)`);
  }
  const key = `total/${order.customer}`;
  const t = state.getJson(key) ?? { total: 0, count: 0 };
  t.total += order.amount;
  t.count += 1;
  state.setJson(key, t);
  emit("totals", "total.updated", {
    key: order.customer,
    json: { customer: order.customer, total: t.total, count: t.count, input: event.id },
  });
}
