#!/usr/bin/env bash
# Make docs/run-report.png: run docs/lightning.md's digits example (its first
# two python blocks) in a temporary folder, draw the run with `gradscore
# report`, and screenshot the page with headless Chromium (Debian: chromium).
# Usage, from the repository root: bash docs/make_run_report.sh [python]
set -euo pipefail
root=$(pwd)
py=${1:-.venv/bin/python}
gs=$(dirname "$py")/gradscore
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && "$root/$py" - "$root" <<'PY'
import sys
sys.path.insert(0, sys.argv[1] + "/tests/docs")
from test_docs_code import parse
blocks = parse(open(sys.argv[1] + "/docs/lightning.md", encoding="utf-8").read())
ns = {"__name__": "docs_lightning"}
for line, code, _ in blocks[:2]:
    exec(compile(code, f"docs/lightning.md:{line}", "exec"), ns)
PY
)
"$root/$gs" report "$work/run" -o "$work/run-report.html"
chromium --headless --no-sandbox --disable-gpu --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$(mktemp -d)" --hide-scrollbars \
  --screenshot="$root/docs/run-report.png" --window-size=1280,2000 \
  "file://$work/run-report.html"
echo "wrote docs/run-report.png"
