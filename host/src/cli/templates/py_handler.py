"""{{name}}: counts events per partition key and emits each new count.
Replace ``handle`` with your logic; ``.sluice/build.sh test .`` runs tests/
with an in-memory host."""

from sluice import emit, state


def handle(event):
    key = event.key_str or "-"
    n = state.get_json(f"count/{key}", 0) + 1
    state.set_json(f"count/{key}", n)
    emit("{{name}}-out", "count.updated", key=key, json={"key": key, "count": n})
