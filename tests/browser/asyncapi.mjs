#!/usr/bin/env node
// Parses and validates an AsyncAPI document with @asyncapi/parser (the
// parser the AsyncAPI tools use) and reports what it found.
//
//   node tests/browser/asyncapi.mjs <asyncapi.json>
//
// Prints ONE JSON line on stdout:
//   {"valid": bool, "version": "3.0.0", "diagnostics": [{"severity", "code", "message", "path"}],
//    "channels": [{"id", "address", "messages": ["order.created.v1", ...]}],
//    "operations": [{"id", "action", "channel", "messages": [...]}],
//    "messages": [{"id", "name", "schemaFormat", "payload_type", "examples": n}],
//    "payloads": [{"id", "schema_error": null | "...", "examples": [bool, ...]}],
//    "error": null | "..."}
// Severity is the parser's: 0 error, 1 warning, 2 information, 3 hint; the
// document is valid when the parser produced one (no errors).
//
// The parser does not check what a payload's JSON Schema says, so `payloads`
// does, with Ajv (JSON Schema 2020-12, formats on): each message's payload
// schema compiled from the document as written (its `$ref`s resolved inside
// the document), and each of the message's examples validated against it.
// Exit 0 when it could parse (valid or not: the caller asserts), 2 on bad
// usage or when the parser is missing.
// Environment: SLUICE_BROWSER_TOOLS (scripts/browser-tools.sh dir).
import { readFileSync } from "node:fs";
import { emit, loadPackage } from "./lib.mjs";

async function main() {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: node tests/browser/asyncapi.mjs <asyncapi.json>\n");
    return 2;
  }
  const { Parser } = await loadPackage("@asyncapi/parser");
  const parser = new Parser();
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"));
  const out = {
    valid: !!document,
    version: document ? document.version() : null,
    diagnostics: diagnostics.map((d) => ({ severity: d.severity, code: String(d.code), message: d.message, path: d.path.join("/") })),
    channels: [], operations: [], messages: [], payloads: [], error: null,
  };
  if (document) {
    out.channels = document.channels().all().map((c) => ({
      id: c.id(), address: c.address(), messages: c.messages().all().map((m) => m.id()),
    }));
    out.operations = document.operations().all().map((o) => ({
      id: o.id(), action: o.action(),
      channel: o.channels().all().map((c) => c.address()).join(","),
      messages: o.messages().all().map((m) => m.id()),
    }));
    out.messages = document.components().messages().all().map((m) => ({
      id: m.id(), name: m.name(), schemaFormat: m.schemaFormat(),
      payload_type: m.hasPayload() ? m.payload().type() : null,
      examples: m.examples().all().length,
    }));
  }
  out.payloads = await checkPayloads(JSON.parse(readFileSync(file, "utf8")));
  emit(out);
  return 0;
}

// Every component message with a payload: does its schema compile as JSON
// Schema 2020-12 (meta-schema and references), and do its examples pass?
async function checkPayloads(doc) {
  const Ajv2020 = (await loadPackage("ajv/dist/2020")).default;
  const addFormats = (await loadPackage("ajv-formats")).default;
  // Not strict: the document around the schemas has AsyncAPI's keywords.
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const base = "urn:sluice:asyncapi-document";
  ajv.addSchema({ ...doc, $id: base });
  const messages = (doc.components && doc.components.messages) || {};
  return Object.entries(messages).filter(([, m]) => m.payload).map(([id, m]) => {
    const pointer = `#/components/messages/${id}/payload/schema`;
    let validate;
    try {
      validate = ajv.getSchema(base + pointer);
      if (!validate) throw new Error(`no schema at ${pointer}`);
    } catch (e) {
      return { id, schema_error: String(e.message || e), examples: [] };
    }
    return {
      id, schema_error: null,
      examples: (m.examples || []).map((x) => validate(x.payload) === true),
    };
  });
}

main().then((code) => process.exit(code), (e) => {
  emit({ valid: false, diagnostics: [], error: String(e && e.stack || e) });
  process.exit(2);
});
