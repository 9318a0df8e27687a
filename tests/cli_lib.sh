# Shared helpers of the command-line test scripts (sourced): a temporary folder, a failure count
# and `expect NAME WANT_STATUS PATTERN -- command...`, which runs the command and checks its exit
# status and that its output matches the extended regular expression. End with `cli_finish`.
fail=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect() {
  local name=$1 want=$2 pattern=$3; shift 4
  "$@" >"$tmp/out" 2>&1
  local got=$?
  if [[ $got -ne $want ]] || ! grep -qE -- "$pattern" "$tmp/out"; then
    echo "FAIL $name: status $got (want $want), pattern '$pattern'"; sed 's/^/  | /' "$tmp/out" | head -20
    fail=$((fail + 1))
  else
    echo "ok   $name"
  fi
}

cli_finish() {
  echo "$fail failed"
  [[ $fail -eq 0 ]]
}
