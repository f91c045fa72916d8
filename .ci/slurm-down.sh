#!/usr/bin/env bash
# Stop the single-node test SLURM cluster started by .ci/slurm-up.sh.
# Safe to run when nothing is running.  Set SLURM_DOWN_KEEP_MUNGE=1 to leave
# munged running.
set -euo pipefail

RUN_DIR=/run/slurm
log() { printf '[slurm-down] %s\n' "$*" >&2; }

# stop PIDFILE PROGNAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop() {
    local pidf="$1" prog="$2" pid i
    [[ -s "$pidf" ]] || { log "$prog: no pid file ($pidf)"; return 0; }
    pid="$(cat "$pidf" 2>/dev/null || true)"
    if [[ ! "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null \
        || [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$prog" ]]; then
        log "$prog: not running (stale pid file)"
        rm -f "$pidf"
        return 0
    fi
    log "stopping $prog (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$prog did not exit after 10s; sending SIGKILL"
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidf"
}

stop "$RUN_DIR/slurmd.pid" slurmd
stop "$RUN_DIR/slurmctld.pid" slurmctld
if [[ "${SLURM_DOWN_KEEP_MUNGE:-0}" != 1 ]]; then
    stop /run/munge/munged.pid munged
fi
