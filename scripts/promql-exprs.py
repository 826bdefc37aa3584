#!/usr/bin/env python3
"""Print every PromQL expression of examples/observability/, one JSON object a line:

    {"source": "grafana:<panel title>", "expr": "..."}   each target of each dashboard panel
    {"source": "alert:<alert name>", "expr": "..."}      each rule of alerts.yml

Dashboard expressions are made runnable as they are: $__rate_interval (and the
other interval variables) become 1m, the $module variable becomes .* (the
dashboard's "All"). A test can then run each one against a Prometheus that
scrapes a host.

    scripts/promql-exprs.py [--dashboard FILE] [--alerts FILE]

alerts.yml is read with PyYAML when it is installed, else with a small parser
of `- alert:` and `expr:` lines (plain, quoted, or `|`/`>` block scalars),
which is enough for the style alerts.yml is written in. SLUICE_PROMQL_NO_YAML=1
forces the small parser (to test it).
"""
import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OBS = os.path.join(HERE, "..", "examples", "observability")

INTERVALS = ("__rate_interval", "__interval", "__range")
VARIABLES = {"module": ".*"}


def substitute(expr):
    for name in INTERVALS:
        expr = expr.replace("${%s}" % name, "1m").replace("$" + name, "1m")
    for name, value in VARIABLES.items():
        # ${module}, ${module:regex}, [[module]], $module (not $modules)
        expr = re.sub(r"\$\{%s(?::[a-z]+)?\}" % name, value, expr)
        expr = expr.replace("[[%s]]" % name, value)
        expr = re.sub(r"\$%s(?![A-Za-z0-9_])" % name, value, expr)
    return expr


def panels_of(panels):
    """Panels in order, descending into rows (collapsed rows keep theirs inside)."""
    for panel in panels or []:
        yield panel
        yield from panels_of(panel.get("panels"))


def dashboard_exprs(path):
    with open(path) as f:
        dash = json.load(f)
    for panel in panels_of(dash.get("panels")):
        for target in panel.get("targets") or []:
            expr = (target.get("expr") or "").strip()
            if expr and not target.get("hide"):
                yield "grafana:" + panel.get("title", ""), substitute(expr)


def alert_exprs_yaml(text):
    import yaml
    doc = yaml.safe_load(text) or {}
    for group in doc.get("groups") or []:
        for rule in group.get("rules") or []:
            if "alert" in rule:
                yield "alert:" + str(rule["alert"]), str(rule["expr"]).strip()


def unquote(value):
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return json.loads(value)
    return re.sub(r"\s+#.*$", "", value)


def alert_exprs_plain(text):
    """`- alert: NAME` then its `expr:`, plain or as a `|` / `>` block."""
    lines = text.splitlines()
    name = None
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*-\s+(alert|record):\s*(.*?)\s*$", line)
        if m:
            name = unquote(m.group(2)) if m.group(1) == "alert" else None
            i += 1
            continue
        m = re.match(r"^(\s*)(?:-\s+)?expr:\s*(.*?)\s*$", line)
        if m and name is not None:
            indent, value = len(m.group(1)), m.group(2)
            if value[:1] in ("|", ">"):
                folded = value[0] == ">"
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i])
                    i += 1
                while body and not body[-1].strip():
                    body.pop()
                strip = min(len(b) - len(b.lstrip()) for b in body if b.strip())
                body = [b[strip:] for b in body]
                expr = (" " if folded else "\n").join(body)
            else:
                expr = unquote(value)
                i += 1
            yield "alert:" + name, expr.strip()
            name = None
            continue
        i += 1


def alert_exprs(path):
    with open(path) as f:
        text = f.read()
    if os.environ.get("SLUICE_PROMQL_NO_YAML") != "1":
        try:
            import yaml  # noqa: F401
        except ImportError:
            pass
        else:
            return list(alert_exprs_yaml(text))
    return list(alert_exprs_plain(text))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashboard", default=os.path.join(OBS, "grafana-dashboard.json"))
    ap.add_argument("--alerts", default=os.path.join(OBS, "alerts.yml"))
    args = ap.parse_args()
    out = list(dashboard_exprs(args.dashboard)) + alert_exprs(args.alerts)
    for source, expr in out:
        print(json.dumps({"source": source, "expr": expr}))
    if not out:
        print("no expressions found", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
