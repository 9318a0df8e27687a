#!/usr/bin/env bash
# The README's quick-start learns: scripts/quickstart_run.sh (after the build) evaluates the
# untrained tiny model, trains both stages on 2 ranks and evaluates again; the untrained mAP must
# stay below 0.3 and the trained one reach 0.8 (metrics.json of each run). The elapsed time is
# printed, not asserted (the README's 5-minute figure is a measurement, CI machines vary).
# Usage: quickstart_test.sh BUILD_DIR   (run from the repository root)
set -u
build=$1
source "$(dirname "$0")/cli_lib.sh"
start=$(date +%s)
BUILD_DIR="$build" RUN_DIR="$tmp/run" bash scripts/quickstart_run.sh >"$tmp/quickstart.log" 2>&1
rc=$?
echo "quickstart_run.sh: status $rc after $(( $(date +%s) - start )) s"
grep -E '^(untrained|trained): ' "$tmp/quickstart.log"
map() {  # map RUN: the mAP of RUN's last evaluation, or "none"
  /usr/bin/python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['mAP'])" \
    "$tmp/run/$1/metrics.json" 2>/dev/null || echo none
}
untrained=$(map untrained) trained=$(map trained)
expect "quickstart-runs" 0 "^status" -- bash -c "echo status $rc; exit $rc"
expect "untrained-below-0.3" 0 "^yes" -- /usr/bin/python3 -c \
  "print('yes' if '$untrained' != 'none' and float('$untrained') < 0.3 else 'no: $untrained')"
expect "trained-at-least-0.8" 0 "^yes" -- /usr/bin/python3 -c \
  "print('yes' if '$trained' != 'none' and float('$trained') >= 0.8 else 'no: $trained')"
[[ $fail -eq 0 ]] || tail -40 "$tmp/quickstart.log"
cli_finish
