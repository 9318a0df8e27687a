# A throw-away single-node SLURM cluster on 127.0.0.1 for the service tests (sourced): munged,
# slurmctld and slurmd in the foreground, backgrounded (so their PIDs are known), with config,
# keys, sockets, state, spool and logs under one temporary folder, on free ports picked at run time.
#   slurm_requirements || exit 77   # munge / SLURM missing: the test is skipped
#   slurm_start                     # exports SLURM_CONF; trap slurm_stop on EXIT
#   slurm_wait_job ID [TIMEOUT_S]   # polls `scontrol show job -o`, prints the final JobState
#   slurm_stop                      # cancels leftover jobs, stops the daemons by PID
# Pitfalls handled: munged wants every folder on its socket path o+x;
# every client needs SLURM_CONF and the munge socket (AuthInfo=socket=); the node's topology is
# copied from `slurmd -C` and RealMemory kept below what slurmd sees (else the node is drained);
# batch_sched_delay=0 (else jobs start up to 3 s late); `sbatch --wait` polls slowly, so we poll.
SLURM_PIDS=()
SLURM_DIR=""

slurm_requirements() {  # names the missing programs on stderr; status 1 when any is missing
  local missing=()
  for p in munged mungekey slurmctld slurmd sbatch srun scontrol scancel sinfo squeue; do
    command -v "$p" >/dev/null || missing+=("$p")
  done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "SKIP: missing ${missing[*]} (Debian packages munge slurmctld slurmd slurm-client)" >&2
    return 1
  fi
}

slurm_free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

slurm_fail() {  # slurm_fail MESSAGE: prints the daemons' logs, returns 1
  echo "slurm_start: $1" >&2
  tail -n 20 "$SLURM_DIR"/log/* 2>/dev/null | sed 's/^/  | /' >&2
  return 1
}

slurm_write_conf() {
  local ctld_port slurmd_port topo mem_mb
  ctld_port=$(slurm_free_port) slurmd_port=$(slurm_free_port)
  topo=$(slurmd -C | head -1 | tr ' ' '\n' |
    grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=' | tr '\n' ' ')
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 512 ))
  cat >"$SLURM_DIR/slurm.conf" <<CONF
ClusterName=reidci
SlurmctldHost=localhost
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SLURM_DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
JobRequeue=1
NodeName=localhost NodeAddr=127.0.0.1 $topo RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

slurm_start() {
  SLURM_DIR=$(mktemp -d /tmp/reid-slurm.XXXXXX)
  chmod 755 "$SLURM_DIR"  # munged: every folder on the socket path must be world-executable
  mkdir -p "$SLURM_DIR"/{munge,state,spool,log}
  chmod 755 "$SLURM_DIR/munge"
  mungekey --create --keyfile="$SLURM_DIR/munge/munge.key" || return 1
  munged -F --socket="$SLURM_DIR/munge/munge.socket" --key-file="$SLURM_DIR/munge/munge.key" \
    --pid-file="$SLURM_DIR/munge/munged.pid" --seed-file="$SLURM_DIR/munge/munged.seed" \
    --log-file="$SLURM_DIR/log/munged.log" >"$SLURM_DIR/log/munged.out" 2>&1 &
  SLURM_PIDS+=($!)
  for _ in $(seq 200); do [[ -S $SLURM_DIR/munge/munge.socket ]] && break; sleep 0.05; done
  [[ -S $SLURM_DIR/munge/munge.socket ]] || { slurm_fail "munged did not start"; return 1; }
  slurm_write_conf
  export SLURM_CONF="$SLURM_DIR/slurm.conf"
  slurmctld -D -i -f "$SLURM_CONF" >"$SLURM_DIR/log/slurmctld.out" 2>&1 &
  SLURM_PIDS+=($!)
  for _ in $(seq 200); do scontrol ping 2>/dev/null | grep -q 'is UP' && break; sleep 0.1; done
  scontrol ping 2>/dev/null | grep -q 'is UP' || { slurm_fail "slurmctld did not start"; return 1; }
  slurmd -D -N localhost -f "$SLURM_CONF" >"$SLURM_DIR/log/slurmd.out" 2>&1 &
  SLURM_PIDS+=($!)
  local state=""
  for _ in $(seq 300); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    [[ $state == idle ]] && break
    sleep 0.1
  done
  [[ $state == idle ]] || { slurm_fail "node localhost is '$state', not idle"; return 1; }
}

slurm_stop() {  # cancels our jobs, stops slurmd, slurmctld, munged (reverse order) by PID
  if [[ -n ${SLURM_CONF:-} && ${#SLURM_PIDS[@]} -ge 3 ]]; then
    scancel --full --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 100); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.1; done
  fi
  local i pid
  for (( i = ${#SLURM_PIDS[@]} - 1; i >= 0; i-- )); do
    pid=${SLURM_PIDS[$i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SLURM_PIDS=()
  if [[ -n $SLURM_DIR && ${SLURM_KEEP:-0} != 1 ]]; then rm -rf "$SLURM_DIR"; fi
}

slurm_job_field() {  # slurm_job_field ID NAME: one field of `scontrol show job -o ID`
  scontrol show job -o "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1
}

slurm_wait_job() {  # slurm_wait_job ID [TIMEOUT_S]: waits for a final state and prints it
  local id=$1 limit=$(( ${2:-300} * 5 )) state=""
  for (( i = 0; i < limit; i++ )); do
    state=$(slurm_job_field "$id" JobState)
    case $state in
      PENDING | CONFIGURING | RUNNING | COMPLETING | REQUEUED | REQUEUE_FED | REQUEUE_HOLD | \
        RESIZING | SUSPENDED | "") sleep 0.2 ;;
      *) break ;;
    esac
  done
  echo "$state"
}
