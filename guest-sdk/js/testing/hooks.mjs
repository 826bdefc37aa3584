// Module resolution hooks for tests (see ../testing.mjs).
const FUNCS = {
  state: ["get", "set", "delete", "scanPrefix"],
  emit: ["emit"],
  log: ["log"],
  config: ["get", "all"],
};

export async function resolve(specifier, context, next) {
  if (specifier === "sluice") {
    return { url: new URL("../sluice.js", import.meta.url).href, shortCircuit: true };
  }
  if (specifier === "sluice/testing") {
    return { url: new URL("./host.js", import.meta.url).href, shortCircuit: true };
  }
  const m = /^sluice:processor\/(state|emit|log|config)@/.exec(specifier);
  if (m) return { url: `sluice-test:${m[1]}`, shortCircuit: true };
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url.startsWith("sluice-test:")) {
    const iface = url.slice("sluice-test:".length);
    const source = FUNCS[iface]
      .map((f) => `const _${f} = (...a) => globalThis.__sluiceTestHost.${iface}.${f}(...a);\nexport { _${f} as ${f} };`)
      .join("\n");
    return { format: "module", source, shortCircuit: true };
  }
  return next(url, context);
}
