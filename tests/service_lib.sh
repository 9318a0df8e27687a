# Shared helpers of the service tests (sourced by bash scripts run from the repository root):
# real Prometheus / Pushgateway servers and background jobs on free loopback ports, started by
# the script and stopped by PID when it exits (trap), in a temporary folder.
#
#   service_require CMD...          exit 77 (ctest: Skipped) when a command is missing
#   $SVC_DIR                        temporary folder; removed on exit, kept on failure or KEEP=1
#   free_port                       prints a port that was free a moment ago
#   free_port_pair                  prints P such that P and P+1 were free (exporters of 2 ranks)
#   svc_start NAME CMD...           runs CMD in the background (log $SVC_DIR/NAME.log); PID in
#                                   $SVC_PID; stopped (SIGTERM, then SIGKILL) on exit
#   svc_stop PID                    stops one of them now
#   wait_http URL PID NAME [SECS]   waits until URL answers 2xx (fails early when PID died)
#   start_pushgateway PORT          Pushgateway persisting in $SVC_DIR only; waits until ready
#   start_prometheus PORT FILE [RULES]  Prometheus with the scrape_configs YAML in FILE (and the
#                                   rule file RULES), scrape and evaluation interval 1 s, TSDB in
#                                   $SVC_DIR; waits until ready
#   wait_scraping PORT N [SECS]     waits until N targets exist and each was scraped once (up or
#                                   down): Prometheus applies targets only ~5 s after start
#   prom_query PORT EXPR [TIME]     the query's "data" JSON ({"resultType", "result"}) on stdout;
#                                   fails (status 1, message on stderr) when the query fails
#   prom_series PORT EXPR [TIME]    number of series (or 1 for a scalar) the query returns
#   elapsed START                   seconds since START (a `date +%s.%N` value)
#   check NAME CONDITION [LOG]      evaluates CONDITION, prints ok/FAIL, counts failures in $fail
#   service_finish                  prints the failure count; status 0 when none
#
# Prometheus 2.42 facts: values are queryable ~6.5 s after it starts (start it
# first); Debian's Pushgateway persists to /var/lib by default (always pass --persistence.file);
# pushed text must end with a newline.

SVC_PIDS=()
fail=0
SVC_DIR=$(mktemp -d /tmp/reid-service.XXXXXX)
SVC_PY=/usr/bin/python3
[[ -x $SVC_PY ]] || SVC_PY=python3

svc_cleanup() {
  local rc=$?
  local i
  for ((i = ${#SVC_PIDS[@]} - 1; i >= 0; i--)); do svc_stop "${SVC_PIDS[$i]}"; done
  if [[ ${KEEP:-0} == 1 || ($rc -ne 0 && $rc -ne 77) ]]; then
    echo "kept $SVC_DIR"
  else
    rm -rf "$SVC_DIR"
  fi
  exit $rc
}
trap svc_cleanup EXIT

service_require() {
  local c
  for c in "$@"; do
    if ! command -v "$c" >/dev/null 2>&1; then
      echo "SKIP: $c not installed (scripts/install-deps.sh installs it)"
      exit 77
    fi
  done
}

free_port() {
  "$SVC_PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

free_port_pair() {
  "$SVC_PY" - <<'EOF'
import socket
for _ in range(100):
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
EOF
}

svc_start() {
  local name=$1
  shift
  "$@" >"$SVC_DIR/$name.log" 2>&1 &
  SVC_PID=$!
  SVC_PIDS+=("$SVC_PID")
}

svc_stop() {
  local pid=$1 _
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

wait_http() {
  local url=$1 pid=$2 name=$3 secs=${4:-30} _
  for _ in $(seq $((secs * 10))); do
    curl -sf -o /dev/null --max-time 2 "$url" && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "$name exited:"; tail -5 "$SVC_DIR/$name.log"; return 1
    fi
    sleep 0.1
  done
  echo "$name not ready at $url after $secs s"; return 1
}

start_pushgateway() {
  local port=$1
  svc_start pushgateway prometheus-pushgateway --web.listen-address="127.0.0.1:$port" \
    --persistence.file="$SVC_DIR/pushgateway.data"
  wait_http "http://127.0.0.1:$port/-/ready" "$SVC_PID" pushgateway
}

start_prometheus() {
  local port=$1 scrape_configs=$2 rules=${3:-}
  {
    printf 'global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n'
    [[ -n $rules ]] && printf 'rule_files: ["%s"]\n' "$rules"
    printf 'scrape_configs:\n'
    cat "$scrape_configs"
  } >"$SVC_DIR/prometheus.yml"
  promtool check config "$SVC_DIR/prometheus.yml" >/dev/null || {
    echo "bad Prometheus config:"; cat "$SVC_DIR/prometheus.yml"; return 1; }
  svc_start prometheus prometheus --config.file="$SVC_DIR/prometheus.yml" \
    --storage.tsdb.path="$SVC_DIR/tsdb" --web.listen-address="127.0.0.1:$port" --log.level=warn
  wait_http "http://127.0.0.1:$port/-/ready" "$SVC_PID" prometheus
}

wait_scraping() {
  local port=$1 n=$2 secs=${3:-30} _
  for _ in $(seq $((secs * 10))); do
    curl -sf --max-time 2 "http://127.0.0.1:$port/api/v1/targets" | "$SVC_PY" -c '
import json, sys
t = json.load(sys.stdin)["data"]["activeTargets"]
sys.exit(0 if len(t) >= int(sys.argv[1]) and all(not x["lastScrape"].startswith("0001") for x in t) else 1)
' "$n" && return 0
    sleep 0.1
  done
  echo "Prometheus on $port: $n targets not scraped after $secs s"; return 1
}

prom_query() {
  local port=$1 expr=$2 time=${3:-}
  local args=(--data-urlencode "query=$expr")
  [[ -n $time ]] && args+=(--data-urlencode "time=$time")
  curl -s --max-time 10 --get "${args[@]}" "http://127.0.0.1:$port/api/v1/query" | "$SVC_PY" -c '
import json, sys
try:
    r = json.load(sys.stdin)
except ValueError:
    sys.exit("no answer from Prometheus")
if r.get("status") != "success":
    sys.exit("%s: %s" % (r.get("errorType"), r.get("error")))
print(json.dumps(r["data"]))
'
}

prom_series() {
  local data
  data=$(prom_query "$@") || { echo 0; return 1; }
  "$SVC_PY" -c '
import json, sys
d = json.loads(sys.argv[1])
print(len(d["result"]) if d["resultType"] in ("vector", "matrix") else 1)
' "$data"
}

elapsed() { awk -v s="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f\n", now - s }'; }

check() {
  if eval "$2"; then
    echo "ok   $1"
  else
    echo "FAIL $1"
    [[ -n ${3:-} && -f ${3:-} ]] && tail -20 "$3" | sed 's/^/  | /'
    fail=$((fail + 1))
  fi
}

service_finish() {
  echo "$fail failed"
  [[ $fail -eq 0 ]]
}
