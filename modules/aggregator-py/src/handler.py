"""Stateful aggregator: keeps a running total and count per customer and emits
a ``total.updated`` event with the new values after every order. The same logic
as modules/aggregator (Rust) and modules/aggregator-js (JavaScript)."""

from sluice import Reject, emit, state


def handle(event):
    order = event.json()
    customer, amount = order.get("customer"), order.get("amount")
    if not isinstance(customer, str) or not isinstance(amount, int) or isinstance(amount, bool):
        raise Reject(
            f'event {event.id} data is not the expected JSON: needs "customer" (string) and "amount" (integer)'
        )
    key = f"total/{customer}"
    t = state.get_json(key, {"total": 0, "count": 0})
    t["total"] += amount
    t["count"] += 1
    state.set_json(key, t)
    emit(
        "totals",
        "total.updated",
        key=customer,
        json={"customer": customer, "total": t["total"], "count": t["count"], "input": event.id},
    )
