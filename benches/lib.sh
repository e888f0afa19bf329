# benches/lib.sh: shell helpers shared by benches/wrk/run.sh and benches/chaos/run.sh. Sourced,
# not run. Set $bench_tag (the log prefix) and $keep (1 keeps the scratch directory) first.
#
#   bench_scratch PREFIX WHAT   a mktemp -d scratch directory in $tmp, and the traps that kill
#                               every process started with `start` when the script ends
#   log MSG, die MSG            a timestamped line on stderr; die also exits 1
#   bench_tools                 installs nginx, HAProxy and wrk with apt-get when one is missing
#   bench_placement             sets on_proxy_cpu / on_load_cpu (taskset prefixes) and $placement
#   free_port                   a free loopback port, never handed out twice in one run
#   start NAME CMD...           runs CMD in its own session, output to $tmp/NAME.log
#   stop PID [SIGNAL]           ends that session (TERM, then KILL after 3 s)
#   running PID                 the process is alive (not a zombie)
#   wait_ok URL SECS [ARGS]     until URL answers 2xx, for at most SECS seconds

log() { printf '[%s %s] %s\n' "${bench_tag:-bench}" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

bench_tools() {
  local missing=() sudo=""
  command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
  command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
  command -v wrk >/dev/null 2>&1 || missing+=(wrk)
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y nginx-light haproxy wrk >/dev/null ||
      { $sudo apt-get update -qq && $sudo apt-get install -y nginx-light haproxy wrk >/dev/null; } ||
      die "could not install ${missing[*]}"
  fi
  local t
  for t in curl ss taskset setsid timeout awk; do
    command -v "$t" >/dev/null 2>&1 || die "$t is required"
  done
}

pids=()    # each started with setsid, so each pid is also its process group

bench_scratch() { # PREFIX WHAT-IT-HOLDS
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  scratch_holds=$2
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

bench_cleanup() {
  local rc=$? p i alive
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM -- "-$p" 2>/dev/null || true; done
  for i in $(seq 1 30); do
    alive=0
    for p in "${pids[@]}"; do kill -0 -- "-$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  if [ "${keep:-0}" = 1 ] || [ "$rc" -ne 0 ]; then
    log "kept $tmp ($scratch_holds)"
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}

# CPU placement: the proxy under test gets a CPU of its own; the load and the backends share the
# other. --proxy-cpu / --load-cpu set $proxy_cpu / $load_cpu before this runs.
bench_placement() {
  local ncpu
  ncpu=$(nproc)
  if [ "$ncpu" -ge 2 ]; then
    proxy_cpu=${proxy_cpu:-0}
    load_cpu=${load_cpu:-1}
    on_proxy_cpu=(taskset -c "$proxy_cpu")
    on_load_cpu=(taskset -c "$load_cpu")
    placement="proxy under test on CPU $proxy_cpu; $1 on CPU $load_cpu"
  else
    on_proxy_cpu=() on_load_cpu=()
    placement="one CPU: everything shares it (no pinning)"
  fi
}

# Ports come from below the kernel's ephemeral range (ip_local_port_range), so that no outgoing
# connection, of this run or of anything else on the machine, can hold one: the conns row opens
# tens of thousands of connections, and a port a connected socket holds cannot be listened on.
used_ports=" "
port_low=10000 port_high=$(($(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768) - 1))
[ "$port_high" -gt $((port_low + 1000)) ] || port_low=1024
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((port_low + RANDOM % (port_high - port_low + 1)))
    case "$used_ports" in *" $p "*) continue ;; esac
    if [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ]; then
      used_ports="$used_ports$p "
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# start NAME CMD...: run CMD in its own session (so the whole tree can be killed), output to
# $tmp/NAME.log (appended, so a restarted process keeps one log); sets $started_pid. setsid and
# taskset both exec, so that pid is the server's.
start() {
  local name=$1
  shift
  setsid "$@" >>"$tmp/$name.log" 2>&1 &
  started_pid=$!
  pids+=("$started_pid")
}

# stop PID [SIGNAL]: signal the session PID leads (TERM by default), wait up to 3 s for its leader
# to end, then KILL the session and reap the leader.
# Its stderr goes nowhere: bash reports a job killed by a signal ("Killed ...") on the stderr of
# whatever command runs when it notices, and the kill is the point here.
stop() { stop_quietly "$@" 2>/dev/null; }
stop_quietly() {
  local p=$1 sig=${2:-TERM} i
  kill "-$sig" -- "-$p" || return 0
  for i in $(seq 1 30); do
    running "$p" || break
    sleep 0.1
  done
  kill -KILL -- "-$p" || true
  wait "$p" || true
}

# running PID: the process exists and is not a zombie waiting to be reaped.
running() {
  local state
  state=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$state" ] && [ "$state" != Z ]
}

# wait_ok URL SECS [curl args...]: until URL answers 2xx, for at most SECS seconds.
wait_ok() {
  local url=$1 secs=$2 deadline code
  shift 2
  deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    code=$(curl -s --noproxy '*' -o /dev/null -w '%{http_code}' --max-time 1 "$@" "$url" || true)
    case "$code" in 2??) return 0 ;; esac
    sleep 0.1
  done
  return 1
}
