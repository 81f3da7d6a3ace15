#!/usr/bin/env bash
# Runs README.md's "A walk-through with curl" as printed, in one shell, and checks that each
# curl answers with the status of the `# -> NNN` comment that follows it.
#
# The service must be running as the section says; pass its base URL and a token with every
# scope as B and T (scripts/contract.sh does). The lines that start the service and set T and B
# by hand are skipped; everything else runs literally, in a temporary directory.
#
# Usage: B=http://127.0.0.1:8080 T=eyJ... scripts/walkthrough.sh [README.md]
set -euo pipefail
readme=$(cd "$(dirname "${1:-$0/../../README.md}")" && pwd)/$(basename "${1:-README.md}")
: "${B:?base URL of the running service}" "${T:?a token with every scope}"
command -v jq >/dev/null || { echo "the walk-through needs jq"; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
script=$work/walkthrough.bash
statuses=$work/statuses
expected=$work/expected

# The section's ```sh blocks, minus the lines a reader types by hand to start the service.
awk '
  /^## / { inside = ($0 == "## A walk-through with curl") }
  inside && /^```sh$/ { block = 1; next }
  inside && /^```$/ { block = 0; next }
  inside && block { print }
' "$readme" | grep -vE '^(TELEMENTAL_[A-Z_]+=[^ ]+ )*cargo run|^export [TB]=' >"$work/commands"
grep -oE '^# -> [0-9]{3}' "$work/commands" | grep -oE '[0-9]{3}' >"$expected" || true
[ -s "$expected" ] || { echo "no '# -> status' found in the walk-through of $readme"; exit 1; }

cat >"$script" <<EOF
set -euo pipefail
export B='$B' T='$T'
# curl as the reader runs it, also noting the status for the check below.
curl() {
  local body=\$(mktemp) code
  code=\$(command curl "\$@" -o "\$body" -w '%{http_code}') || true
  cat "\$body"
  echo
  echo "\$code" >>'$statuses'
}
EOF
cat "$work/commands" >>"$script"

echo "== README walk-through ($(grep -c . "$expected") calls)"
(cd "$work" && bash "$script")
if ! diff <(tr -d ' ' <"$expected") "$statuses" >"$work/diff"; then
  echo "the walk-through's statuses differ from README.md (< README, > service):"
  cat "$work/diff"
  exit 1
fi
echo "README walk-through: $(grep -c . "$statuses") calls, every status as printed"
