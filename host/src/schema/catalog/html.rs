//! The catalog as one static HTML page: no fetches, no external assets, so
//! the same file works served by a host (`/catalog`), opened from disk, or
//! published anywhere.
//!
//! Sections: topics (what each carries, who writes and reads it), event
//! types (owner, description, compatibility mode, producers and consumers,
//! and per version its schema, example events, the diff from the previous
//! version and whether that change is backward and forward compatible), and
//! modules (what each reads and writes, and the contract it declares). A
//! filter box narrows every section as one types.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use serde_json::Value;
use sluice_schema::Mode;

use super::{Catalog, EventType, Message, safe_key};

/// The page; `asyncapi_href` is where the AsyncAPI document is linked from.
pub fn page(c: &Catalog, asyncapi_href: &str) -> String {
    let topics = c.topics();
    let mut h = String::with_capacity(64 * 1024);
    let versions: usize = c.types.iter().map(|t| t.versions.len()).sum();
    let _ = write!(
        h,
        r##"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title} · event catalog</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>{title} · event catalog</h1>
<p class="counts"><span id="count-topics">{nt}</span> topics · <span id="count-types">{ny}</span> event types · <span id="count-versions">{versions}</span> versions · <span id="count-modules">{nm}</span> modules · <a id="asyncapi-link" href="{href}">AsyncAPI 3.0 document</a></p>
<nav><a href="#topics">Topics</a> <a href="#types">Event types</a> <a href="#modules">Modules</a>
<input id="filter" type="search" placeholder="Filter by topic, type, owner or module" aria-label="Filter"></nav>
</header>
<main>
"##,
        title = esc(&c.title),
        nt = topics.len(),
        ny = c.types.len(),
        nm = c.modules.len(),
        href = esc(asyncapi_href),
    );

    // Topics.
    h.push_str("<section id=\"topics\"><h2>Topics</h2>\n");
    if topics.is_empty() {
        h.push_str("<p class=\"none\">No module reads or writes a topic.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th>Topic</th><th>Event types</th><th>Written by</th><th>Read by</th></tr></thead><tbody>\n",
        );
        for (name, t) in &topics {
            let _ = writeln!(
                h,
                "<tr class=\"topic filterable\" id=\"topic-{id}\" data-search=\"{search}\"><td><code>{name}</code></td><td>{msgs}</td><td>{p}</td><td>{c}</td></tr>",
                id = esc(name),
                search = esc(&search_text(
                    [name.as_str()]
                        .into_iter()
                        .chain(t.messages.iter().map(|m| m.ty.as_str()))
                        .chain(t.producers.iter().map(String::as_str))
                        .chain(t.consumers.iter().map(String::as_str))
                )),
                name = esc(name),
                msgs = message_links(&t.messages),
                p = module_links(&t.producers),
                c = module_links(&t.consumers),
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");

    // Event types.
    h.push_str("<section id=\"types\"><h2>Event types</h2>\n");
    if c.types.is_empty() {
        h.push_str("<p class=\"none\">No event type has a schema.</p>\n");
    }
    let ops = c.operations();
    for t in &c.types {
        let by = |action: &str| -> BTreeSet<String> {
            ops.iter()
                .filter(|o| o.action == action && o.messages.iter().any(|m| m.ty == t.name))
                .map(|o| o.module.clone())
                .collect()
        };
        let (producers, consumers) = (by("send"), by("receive"));
        let on: BTreeSet<&str> = topics
            .values()
            .filter(|tp| tp.messages.iter().any(|m| m.ty == t.name))
            .map(|tp| tp.name.as_str())
            .collect();
        event_type(&mut h, t, &producers, &consumers, &on);
    }
    h.push_str("</section>\n");

    // Modules.
    h.push_str("<section id=\"modules\"><h2>Modules</h2>\n");
    if c.modules.is_empty() {
        h.push_str("<p class=\"none\">No modules given.</p>\n");
    } else {
        h.push_str("<table><thead><tr><th>Module</th><th>Version</th><th>Reads</th><th>Writes</th><th>Dead letters</th><th>Contracts</th></tr></thead><tbody>\n");
        for m in &c.modules {
            let side = |action: &str| -> String {
                ops.iter()
                    .filter(|o| o.module == m.name && o.action == action)
                    .map(|o| {
                        format!(
                            "<code>{}</code>: {}",
                            esc(&o.topic),
                            message_links(&o.messages)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            let contracts: Vec<String> = m
                .consumes
                .iter()
                .map(|c| {
                    let versions = match &c.versions {
                        Some(vs) => format!(
                            " versions {}",
                            vs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                        ),
                        None => " (any version)".into(),
                    };
                    let contract = match &c.contract {
                        Some(s) => format!(
                            "<details><summary>fields it reads</summary><pre>{}</pre></details>",
                            esc(&pretty(s))
                        ),
                        None => String::new(),
                    };
                    format!(
                        "<a href=\"#type-{}\">{}</a>{versions}{contract}",
                        esc(&safe_key(&c.ty)),
                        esc(&c.ty)
                    )
                })
                .collect();
            let _ = writeln!(
                h,
                "<tr class=\"module filterable\" id=\"module-{id}\" data-search=\"{search}\"><td><code>{name}</code></td><td>{version}</td><td>{reads}</td><td>{writes}</td><td><code>{dlq}</code></td><td>{contracts}</td></tr>",
                id = esc(&m.name),
                search = esc(&search_text(
                    [m.name.as_str()]
                        .into_iter()
                        .chain(m.subscribe.keys().map(String::as_str))
                        .chain(m.produce.iter().map(String::as_str))
                        .chain(m.consumes.iter().map(|c| c.ty.as_str()))
                        .chain(m.produces.iter().map(|p| p.ty.as_str()))
                )),
                name = esc(&m.name),
                version = esc(&m.version),
                reads = side("receive"),
                writes = side("send"),
                dlq = esc(&m.dead_letter_topic),
                contracts = contracts.join("<br>"),
            );
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n</main>\n");
    let _ = write!(h, "<script>{SCRIPT}</script>\n</body>\n</html>\n");
    h
}

/// One type's section.
fn event_type(
    h: &mut String,
    t: &EventType,
    producers: &BTreeSet<String>,
    consumers: &BTreeSet<String>,
    on: &BTreeSet<&str>,
) {
    let _ = write!(
        h,
        "<article class=\"type filterable\" id=\"type-{id}\" data-search=\"{search}\">\n<h3><code>{name}</code></h3>\n<p class=\"description\">{desc}</p>\n<dl>\
         <dt>Owner</dt><dd class=\"owner\">{owner}</dd>\
         <dt>Compatibility</dt><dd class=\"mode\">{mode}</dd>\
         <dt>Topics</dt><dd>{topics}</dd>\
         <dt>Written by</dt><dd class=\"producers\">{p}</dd>\
         <dt>Read by</dt><dd class=\"consumers\">{c}</dd></dl>\n",
        id = esc(&safe_key(&t.name)),
        search = esc(&search_text(
            [t.name.as_str(), t.owner.as_str()]
                .into_iter()
                .chain(on.iter().copied())
                .chain(producers.iter().map(String::as_str))
                .chain(consumers.iter().map(String::as_str))
        )),
        name = esc(&t.name),
        desc = esc(&t.description),
        owner = esc(&t.owner),
        mode = esc(&t.compatibility),
        topics = if on.is_empty() {
            "<span class=\"none\">none declared</span>".to_string()
        } else {
            on.iter()
                .map(|n| format!("<a href=\"#topic-{}\"><code>{}</code></a>", esc(n), esc(n)))
                .collect::<Vec<_>>()
                .join(", ")
        },
        p = module_links(producers),
        c = module_links(consumers),
    );
    let mut earlier: Vec<(String, Value)> = Vec::new();
    let latest = t.versions.keys().next_back().copied();
    for (v, schema) in &t.versions {
        let m = Message {
            ty: t.name.clone(),
            version: Some(*v),
        };
        let _ = writeln!(
            h,
            "<details class=\"version\" id=\"{key}\"{open}><summary>Version {v}{tag}</summary>",
            key = esc(&m.key()),
            open = if Some(*v) == latest { " open" } else { "" },
            tag = if Some(*v) == latest { " (latest)" } else { "" },
        );
        if let Some((prev_v, prev)) = earlier.last() {
            let _ = write!(
                h,
                "<h4>Changes from version {prev_v}</h4>\n{}\n{}",
                verdicts(schema, prev_v, prev),
                diff(prev, schema)
            );
        }
        let examples = schema
            .get("examples")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !examples.is_empty() {
            h.push_str("<h4>Example events</h4>\n");
            for x in &examples {
                let _ = writeln!(
                    h,
                    "<pre class=\"example\">{}</pre>",
                    esc(&example_event(&t.name, *v, x))
                );
            }
        }
        let _ = write!(
            h,
            "<details class=\"schema\"><summary>Schema</summary>\n<pre>{}</pre></details>\n</details>\n",
            esc(&pretty(schema))
        );
        earlier.push((v.to_string(), schema.clone()));
    }
    h.push_str("</article>\n");
}

/// An example as the event a producer sends: CloudEvents attributes first,
/// in the order the spec lists them, then the data.
fn example_event(ty: &str, v: u32, data: &Value) -> String {
    let attr = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let data = pretty(data).replace('\n', "\n  ");
    format!(
        "{{\n  \"specversion\": \"1.0\",\n  \"id\": \"…\",\n  \"source\": \"…\",\n  \"type\": {},\n  \"dataschema\": {},\n  \"data\": {data}\n}}",
        attr(ty),
        attr(&format!("{ty}/{v}")),
    )
}

/// Whether the change from `prev` to `schema` is backward and forward
/// compatible, each break named with its path.
fn verdicts(schema: &Value, prev_v: &str, prev: &Value) -> String {
    let previous = [(prev_v.to_string(), prev.clone())];
    let mut out = String::from("<ul class=\"verdicts\">");
    for (mode, what) in [
        (Mode::Backward, "backward (new readers read old events)"),
        (Mode::Forward, "forward (old readers read new events)"),
    ] {
        let breaks = sluice_schema::check(mode, schema, &previous);
        if breaks.is_empty() {
            let _ = write!(out, "<li class=\"ok\">{what}: compatible</li>");
        } else {
            let _ = write!(
                out,
                "<li class=\"breaks\">{what}: <b>not compatible</b><ul>{}</ul></li>",
                breaks
                    .iter()
                    .map(|b| format!(
                        "<li><code>{}</code>: {}</li>",
                        esc(&b.path),
                        esc(&b.message)
                    ))
                    .collect::<String>()
            );
        }
    }
    out.push_str("</ul>");
    out
}

/// A unified line diff of the two schemas, pretty-printed.
fn diff(old: &Value, new: &Value) -> String {
    let (a, b) = (pretty(old) + "\n", pretty(new) + "\n");
    let d = similar::TextDiff::from_lines(&a, &b);
    let mut out = String::from("<pre class=\"diff\">");
    for (i, group) in d.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push_str("<span class=\"gap\">⋯</span>");
        }
        for op in group {
            for change in d.iter_changes(op) {
                let (class, sign) = match change.tag() {
                    similar::ChangeTag::Delete => ("del", '-'),
                    similar::ChangeTag::Insert => ("add", '+'),
                    similar::ChangeTag::Equal => ("same", ' '),
                };
                // Block spans, so no newline between them (in a <pre> it
                // would show as a blank line).
                let _ = write!(
                    out,
                    "<span class=\"{class}\">{sign} {}</span>",
                    esc(change.value().trim_end_matches('\n'))
                );
            }
        }
    }
    out.push_str("</pre>");
    out
}

fn message_links(ms: &BTreeSet<Message>) -> String {
    if ms.is_empty() {
        return "<span class=\"none\">none declared</span>".into();
    }
    ms.iter()
        .map(|m| match m.version {
            Some(v) => format!(
                "<a href=\"#{}\"><code>{}</code> v{v}</a>",
                esc(&m.key()),
                esc(&m.ty)
            ),
            None => format!(
                "<code>{}</code> <span class=\"unschemed\">(no schema)</span>",
                esc(&m.ty)
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn module_links(ms: &BTreeSet<String>) -> String {
    if ms.is_empty() {
        return "<span class=\"none\">no module</span>".into();
    }
    ms.iter()
        .map(|m| format!("<a href=\"#module-{}\">{}</a>", esc(m), esc(m)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the filter box matches an entry against.
fn search_text<'a>(words: impl Iterator<Item = &'a str>) -> String {
    words.map(str::to_lowercase).collect::<Vec<_>>().join(" ")
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `s` safe in HTML text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --muted: #6b7280; --add: #16a34a22; --del: #dc262622; --line: #8884; }
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 1rem 3rem; }
header { position: sticky; top: 0; background: Canvas; padding: .5rem 0; border-bottom: 1px solid var(--line); z-index: 1; }
h1 { font-size: 1.4rem; margin: .3rem 0; }
nav a { margin-right: 1rem; }
#filter { min-width: 20rem; padding: .2rem .4rem; }
.counts, .none, .unschemed { color: var(--muted); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .3rem .5rem; border-bottom: 1px solid var(--line); }
article.type { border: 1px solid var(--line); border-radius: 6px; padding: .2rem 1rem .8rem; margin: 1rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1rem 1rem; }
dt { color: var(--muted); }
dd { margin: 0; }
pre { background: #8881; padding: .5rem; overflow-x: auto; font-size: 12px; }
.diff span { display: block; }
.diff .add { background: var(--add); }
.diff .del { background: var(--del); }
.diff .gap { color: var(--muted); }
.verdicts .ok::before { content: "✓ "; color: #16a34a; }
.verdicts .breaks::before { content: "✗ "; color: #dc2626; }
.hidden { display: none; }
"#;

const SCRIPT: &str = r#"
(function () {
  "use strict";
  var box = document.getElementById("filter");
  box.addEventListener("input", function () {
    var q = box.value.trim().toLowerCase();
    document.querySelectorAll(".filterable").forEach(function (el) {
      var hit = q === "" || el.getAttribute("data-search").indexOf(q) !== -1;
      el.classList.toggle("hidden", !hit);
    });
  });
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_schemas_cannot_make_markup() {
        assert_eq!(
            esc(r#"<script>"x" & 'y'</script>"#),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn an_example_is_a_cloud_event_carrying_the_data() {
        let data = serde_json::json!({"order_id": "o-1", "lines": [{"sku": "a"}]});
        let text = example_event("order.created", 2, &data);
        let event: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(event["data"], data);
        assert_eq!(event["dataschema"], "order.created/2");
        assert_eq!(super::super::super::version_in("order.created/2"), Some(2));
        assert!(text.starts_with("{\n  \"specversion\""), "{text}");
    }

    #[test]
    fn the_diff_marks_added_and_removed_lines() {
        let old = serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let new = serde_json::json!({"type": "object", "properties": {"a": {"type": "number"}}});
        let d = diff(&old, &new);
        assert!(
            d.contains("<span class=\"del\">-       &quot;type&quot;: &quot;integer&quot;</span>"),
            "{d}"
        );
        assert!(
            d.contains("<span class=\"add\">+       &quot;type&quot;: &quot;number&quot;</span>"),
            "{d}"
        );
    }
}
