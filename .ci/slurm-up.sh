#!/usr/bin/env bash
# Configure and start a single-node SLURM cluster (munged + slurmctld + slurmd)
# on this machine, for tests.  Meant for Debian/Ubuntu containers/VMs without
# systemd as PID 1 (daemons are started directly).  Needs root and the
# `slurm-wlm` + `munge` packages.
#
# Idempotent: safe to run repeatedly and when the daemons are already running.
# If the generated slurm.conf differs from the one on disk, the SLURM daemons
# are restarted so the new configuration takes effect.
#
# No cgroup.conf is written: with proctrack/linuxproc + task/none slurmd 22.05
# does not need one.
#
# Environment knobs (all optional):
#   SLURM_UP_TIMEOUT     seconds to wait for the node to become idle (60)
#   SLURM_UP_MEM_MARGIN  MiB of RAM kept out of RealMemory (max(1024, 10%))
#   SLURM_UP_SKIP_TESTS  set to 1 to skip the srun/sbatch smoke tests
set -euo pipefail

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
LOG_DIR=/var/log/slurm
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
RUN_DIR=/run/slurm
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_LOG=/var/log/munge/munged.log
TEST_DIR=/tmp/slurm-up-test

NODE="$(hostname -s)"
START_TS=$(date +%s)

log() { printf '[slurm-up +%ss] %s\n' "$(( $(date +%s) - START_TS ))" "$*" >&2; }

dump_logs() {
    local f
    for f in "$MUNGE_LOG" "$CTLD_LOG" "$SLURMD_LOG"; do
        if [[ -f "$f" ]]; then
            printf '\n----- tail -n 40 %s -----\n' "$f" >&2
            tail -n 40 "$f" >&2 || true
        else
            printf '\n----- %s: (missing) -----\n' "$f" >&2
        fi
    done
    printf '\n----- sinfo -----\n' >&2
    timeout 10 sinfo -N -l >&2 2>&1 || true
    timeout 10 scontrol show node "$NODE" >&2 2>&1 || true
    printf '\n----- processes -----\n' >&2
    pgrep -a -x 'munged|slurmctld|slurmd' >&2 || true
}

die() {
    trap - ERR
    printf '\n[slurm-up] ERROR: %s\n' "$*" >&2
    dump_logs
    exit 1
}

trap 'die "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

# --------------------------------------------------------------------------
# Preflight
# --------------------------------------------------------------------------
[[ $EUID -eq 0 ]] || die "must run as root"
for cmd in munged munge unmunge slurmctld slurmd sinfo scontrol srun sbatch; do
    command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found (apt-get install slurm-wlm munge)"
done
[[ -n "$NODE" ]] || die "hostname -s is empty"
if [[ "$(ps -p 1 -o comm= 2>/dev/null || true)" == systemd ]]; then
    log "note: systemd is PID 1; still starting daemons directly (not via systemctl)"
fi

# A pid file whose process is alive and is the expected program?
pid_alive() { # pidfile progname
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(cat "$1" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

# --------------------------------------------------------------------------
# munge
# --------------------------------------------------------------------------
id munge >/dev/null 2>&1 || die "user 'munge' does not exist (is the munge package installed?)"
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge
install -d -o munge -g munge -m 0700 /var/log/munge
install -d -o munge -g munge -m 0755 "$MUNGE_RUN"

if [[ ! -s "$MUNGE_KEY" ]]; then
    log "creating munge key $MUNGE_KEY"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
    fi
fi
chown munge:munge "$MUNGE_KEY"
chmod 0400 "$MUNGE_KEY"

munge_ok() { timeout 10 munge -n 2>/dev/null | timeout 10 unmunge >/dev/null 2>&1; }

if munge_ok; then
    log "munged already running"
else
    # A stale socket/pid from a killed munged makes the new one refuse to start.
    if ! pgrep -x munged >/dev/null 2>&1; then
        rm -f "$MUNGE_RUN"/munged.pid "$MUNGE_RUN"/munge.socket.2 "$MUNGE_RUN"/munge.socket.2.lock
    fi
    log "starting munged"
    runuser -u munge -- munged --log-file="$MUNGE_LOG" || die "munged failed to start"
    for _ in $(seq 1 50); do munge_ok && break; sleep 0.2; done
    munge_ok || die "munge -n | unmunge does not work after starting munged"
fi

# --------------------------------------------------------------------------
# slurm.conf
# --------------------------------------------------------------------------
# `nproc` honours OMP_NUM_THREADS / OMP_THREAD_LIMIT, which Python libraries set for their
# workers: count the machine's processors instead, or a call from inside a test run would
# reconfigure the node with one CPU and jobs asking for two would pend forever.
NCPU="$(OMP_NUM_THREADS= OMP_THREAD_LIMIT= nproc --all)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
MARGIN="${SLURM_UP_MEM_MARGIN:-$(( MEM_MB / 10 > 1024 ? MEM_MB / 10 : 1024 ))}"
REAL_MEM=$(( MEM_MB - MARGIN ))
(( REAL_MEM >= 256 )) || REAL_MEM=$(( MEM_MB / 2 ))
(( REAL_MEM >= 1 )) || die "could not determine memory size (MemTotal=${MEM_MB}MB)"

# Use the socket/core/thread layout slurmd detects when it agrees with nproc
# (avoids the "Node configuration differs from hardware" warning); otherwise
# (e.g. CPU affinity restricted) fall back to a plain CPUs= count.
TOPO="CPUs=${NCPU}"
HW="$(timeout 20 slurmd -C 2>/dev/null | head -n1 || true)"
hw_get() { { grep -o "\b$1=[0-9]*" <<<"$HW" || true; } | head -n1 | cut -d= -f2; }
hw_cpus="$(hw_get CPUs)"; hw_s="$(hw_get SocketsPerBoard)"
hw_c="$(hw_get CoresPerSocket)"; hw_t="$(hw_get ThreadsPerCore)"
if [[ -n "$hw_cpus" && -n "$hw_s" && -n "$hw_c" && -n "$hw_t" && "$hw_cpus" == "$NCPU" ]] \
    && (( hw_s * hw_c * hw_t == NCPU )); then
    TOPO="CPUs=${NCPU} Sockets=${hw_s} CoresPerSocket=${hw_c} ThreadsPerCore=${hw_t}"
fi

install -d -m 0755 "$CONF_DIR" "$LOG_DIR" "$RUN_DIR" "$STATE_DIR" "$SPOOL_DIR"

NEW_CONF="$(mktemp)"
trap 'rm -f "$NEW_CONF"' EXIT
cat >"$NEW_CONF" <<EOF
# Generated by .ci/slurm-up.sh -- single-node test cluster. Do not edit.
ClusterName=ci
# NodeAddr/SlurmctldHost address pinned to 127.0.0.1 so that nothing depends
# on the hostname resolving (or resolving to a reachable address).
SlurmctldHost=${NODE}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=${STATE_DIR}
SlurmdSpoolDir=${SPOOL_DIR}
SlurmctldPidFile=${CTLD_PID}
SlurmdPidFile=${SLURMD_PID}
SlurmctldLogFile=${CTLD_LOG}
SlurmdLogFile=${SLURMD_LOG}
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Trust the values below instead of draining the node on small hardware
# mismatches (e.g. memory reported slightly differently inside containers).
SlurmdParameters=config_overrides
# Keep finished jobs visible in squeue for a while: without accounting, the
# snakemake slurm plugin checks job status with squeue.
MinJobAge=600
SlurmdTimeout=300
InactiveLimit=0
KillWait=30
Waittime=0
NodeName=${NODE} NodeAddr=127.0.0.1 ${TOPO} RealMemory=${REAL_MEM} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
EOF

CONF_CHANGED=0
if [[ ! -f "$CONF" ]] || ! cmp -s "$NEW_CONF" "$CONF"; then
    log "writing $CONF (NodeName=$NODE $TOPO RealMemory=$REAL_MEM)"
    install -m 0644 "$NEW_CONF" "$CONF"
    CONF_CHANGED=1
else
    log "$CONF unchanged"
fi

# --------------------------------------------------------------------------
# slurmctld / slurmd
# --------------------------------------------------------------------------
stop_daemon() { # pidfile progname
    local pid i
    pid_alive "$1" "$2" || return 0
    pid="$(cat "$1")"
    log "stopping $2 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

# The daemons fork before they bind their ports, so a zero exit status does
# not mean much: wait for the pid file, then make sure the process survives
# its initialisation (e.g. "Unable to bind listen port").
wait_alive() { # pidfile progname
    local i
    for i in $(seq 1 50); do pid_alive "$1" "$2" && break; sleep 0.2; done
    sleep 1
    pid_alive "$1" "$2" || die "$2 exited right after starting (see its log below)"
}

if (( CONF_CHANGED )); then
    stop_daemon "$SLURMD_PID" slurmd
    stop_daemon "$CTLD_PID" slurmctld
fi

# Daemons started by something else (no/other pid file) would hold the ports.
for prog in slurmctld slurmd; do
    pidf="$CTLD_PID"; [[ $prog == slurmd ]] && pidf="$SLURMD_PID"
    if ! pid_alive "$pidf" "$prog" && pgrep -x "$prog" >/dev/null 2>&1; then
        die "a $prog process is running that is not tracked by $pidf: $(pgrep -a -x "$prog" | tr '\n' ' '); stop it first (.ci/slurm-down.sh)"
    fi
done

if pid_alive "$CTLD_PID" slurmctld; then
    log "slurmctld already running (pid $(cat "$CTLD_PID"))"
else
    log "starting slurmctld"
    rm -f "$CTLD_PID"
    slurmctld -f "$CONF" || die "slurmctld failed to start"
    wait_alive "$CTLD_PID" slurmctld
fi

for _ in $(seq 1 $(( TIMEOUT * 2 ))); do
    timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' && break
    sleep 0.5
done
timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' || die "slurmctld does not answer 'scontrol ping'"

if pid_alive "$SLURMD_PID" slurmd; then
    log "slurmd already running (pid $(cat "$SLURMD_PID"))"
else
    log "starting slurmd"
    rm -f "$SLURMD_PID"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd failed to start"
    wait_alive "$SLURMD_PID" slurmd
fi

# --------------------------------------------------------------------------
# Wait for the node to become idle
# --------------------------------------------------------------------------
node_state() { timeout 10 sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n1; }

deadline=$(( $(date +%s) + TIMEOUT ))
state=""
last_resume=0
while (( $(date +%s) < deadline )); do
    pid_alive "$SLURMD_PID" slurmd || die "slurmd died"
    pid_alive "$CTLD_PID" slurmctld || die "slurmctld died"
    state="$(node_state || true)"
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        down*|drain*|drained*|fail*|inval*)
            now=$(date +%s)
            if (( now - last_resume >= 5 )); then
                log "node $NODE is '$state'; resuming"
                scontrol update nodename="$NODE" state=resume 2>&1 | sed 's/^/[slurm-up]   /' >&2 || true
                last_resume=$now
            fi
            ;;
    esac
    sleep 1
done
case "$state" in
    idle|mixed|allocated|completing) log "node $NODE is $state" ;;
    *) die "node $NODE not idle after ${TIMEOUT}s (state: '${state:-unknown}')" ;;
esac

# --------------------------------------------------------------------------
# Smoke tests
# --------------------------------------------------------------------------
if [[ "${SLURM_UP_SKIP_TESTS:-0}" != 1 ]]; then
    out="$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1)" || die "srun -N1 -n1 hostname failed: $out"
    grep -qxF -e "$(hostname)" -e "$NODE" <<<"$out" || die "srun hostname printed unexpected output: $out"
    log "srun OK: $out"

    mkdir -p "$TEST_DIR"
    rm -f "$TEST_DIR"/sbatch-*.out
    sb="$(cd "$TEST_DIR" && timeout 90 sbatch --wait -t 1 -o "$TEST_DIR/sbatch-%j.out" --wrap 'echo hi' 2>&1)" \
        || die "sbatch --wait --wrap 'echo hi' failed: $sb"
    jobid="$(grep -o 'Submitted batch job [0-9]*' <<<"$sb" | awk '{print $4}')"
    [[ -n "$jobid" ]] || die "could not parse job id from sbatch output: $sb"
    got="$(cat "$TEST_DIR/sbatch-$jobid.out" 2>/dev/null || true)"
    [[ "$got" == hi ]] || die "sbatch job $jobid output was '$got', expected 'hi'"
    rm -f "$TEST_DIR/sbatch-$jobid.out"
    log "sbatch OK (job $jobid)"
fi

log "SLURM is up: node $NODE, partition debug, CPUs=$NCPU RealMemory=${REAL_MEM}M ($(( $(date +%s) - START_TS ))s)"
