#!/usr/bin/env bash
# The house rules (CI runs this): no import cycle between modules, no file over 500 lines, no trait over 20
# methods (scripts/check-house.py), and no repeated code between the storage wrappers — the sealing layer, the
# session cache and the backends they wrap — beyond boilerplate (`duplicates`, where the machine has it).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check-house.py
if command -v duplicates >/dev/null 2>&1; then
  rows=$(duplicates --repo src --most 200 --seconds 120)
  bad=$(printf '%s\n' "$rows" | grep -E '^D[0-9]+ ' | grep -E 'store/(cache/[a-z_]+|sealed)\.rs' | grep -v 'boilerplate' || true)
  if [ -n "$bad" ]; then
    echo "repeated code in the storage wrappers:"
    printf '%s\n' "$bad"
    exit 1
  fi
  echo "no repeated code in the storage wrappers (duplicates src: $(printf '%s\n' "$rows" | head -1))"
else
  echo "duplicates is not installed here: the wrappers' repetition check did not run"
fi
