#!/usr/bin/env bash
# Checks the monitoring examples in examples/observability/ with Prometheus's
# own tool, promtool:
#   prometheus.yml           promtool check config (also checks the rule file it loads)
#   alerts.yml               promtool check rules
#   alerts.test.yml          promtool test rules (the alerts' unit tests)
#   grafana-dashboard.json   valid JSON (python3 -m json.tool), and every panel
#                            query parses as PromQL (scripts/promql-exprs.py
#                            turns them into recording rules for promtool)
#
#   scripts/check-observability.sh
#
# promtool comes with Debian's `prometheus` package: when it is missing and we
# are root on a machine with apt-get, the package is installed (it may also
# start a Prometheus service; nothing here uses it). Exits non-zero, naming
# each check that failed, if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."
OBS=examples/observability

if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing Debian's prometheus package (for promtool)" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  fi
  command -v promtool >/dev/null || {
    echo "promtool is needed (Debian: apt-get install prometheus; or a Prometheus release)" >&2
    exit 1
  }
fi
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FAILED=()

# Runs one check, printing its output; records its name when it fails.
check() {
  local name="$1"; shift
  echo "==> $name"
  if "$@"; then echo "    ok"; else echo "    FAILED: $name" >&2; FAILED+=("$name"); fi
}

# Writes every dashboard query as a recording rule, so promtool parses it.
dashboard_rules() {
  python3 scripts/promql-exprs.py --dashboard "$OBS/grafana-dashboard.json" --alerts /dev/null \
    >"$TMP/exprs.jsonl" || return 1
  python3 - "$TMP/exprs.jsonl" "$TMP/dashboard-rules.yml" <<'PY' || return 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
if not rows:
    sys.exit("no panel queries found in the dashboard")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, row in enumerate(rows):
        # JSON strings are valid YAML double-quoted scalars.
        out.write("      - record: dashboard:query_%d\n        expr: %s\n" % (i, json.dumps(row["expr"])))
print("    %d panel queries" % len(rows))
PY
  promtool check rules "$TMP/dashboard-rules.yml"
}

check "promtool check config $OBS/prometheus.yml" promtool check config "$OBS/prometheus.yml"
check "promtool check rules $OBS/alerts.yml" promtool check rules "$OBS/alerts.yml"
check "promtool test rules $OBS/alerts.test.yml" promtool test rules "$OBS/alerts.test.yml"
check "$OBS/grafana-dashboard.json is valid JSON" \
  sh -c 'python3 -m json.tool "$1" >/dev/null' sh "$OBS/grafana-dashboard.json"
check "the dashboard's queries parse as PromQL" dashboard_rules

if [ "${#FAILED[@]}" -gt 0 ]; then
  echo "observability checks failed:" >&2
  printf '  - %s\n' "${FAILED[@]}" >&2
  exit 1
fi
echo "all observability checks passed"
