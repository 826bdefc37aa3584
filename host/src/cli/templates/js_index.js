// {{name}}: counts events per partition key and emits each new count.
// Replace `handle` with your logic; `.sluice/build.sh test .` runs test/ on
// Node.js with an in-memory host. TypeScript: rename to src/index.ts.
import { state, emit } from "sluice";

export function handle(event) {
  const key = event.keyString ?? "-";
  const n = (state.getJson(`count/${key}`) ?? 0) + 1;
  state.setJson(`count/${key}`, n);
  emit("{{name}}-out", "count.updated", { key, json: { key, count: n } });
}
