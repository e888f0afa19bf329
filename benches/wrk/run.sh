#!/usr/bin/env bash
# benches/wrk/run.sh: switchyard against nginx and HAProxy as the edge balancer, same stand-in
# backend, same run. Prints a markdown table (requests/s, p50/p99/p99.9 latency, errors, peak RSS,
# ratios against nginx and against the backend hit directly) and the time to first token that
# switchyard adds to a streamed completion; then the LLM-traffic rows (benches/wrk/llm.sh): many
# concurrent SSE streams, concurrency 1, and many idle connections, against nginx and HAProxy too.
# Method and latest figures: benches/README.md.
#
#   benches/wrk/run.sh               # full run: 5 s per measurement, 3 rounds, medians
#   benches/wrk/run.sh --quick       # CI smoke test: 1 s, 1 round; fails only if a target
#                                    # answered with errors or not at all, never on speed
#   benches/wrk/run.sh --targets switchyard,compare --compare OTHER-BINARY --repeat 10
#                                    # two builds of switchyard in alternating rounds
#
# Everything it writes goes to one mktemp -d directory; every process it starts is killed on exit.
# Traffic stays on 127.0.0.1. Run with --help for the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

duration=5 repeat=3 connections=64 wrk_threads=1 quick=0 build=1 keep=0
ttft_requests=200 bin="" ttft_client="" floor_client="" out="" compare_bin=""
targets="direct,nginx,haproxy,pingora,switchyard,cache,ttft,streams,c1,conns"
# The LLM-traffic rows (llm.sh): streams, c1 (concurrency 1) and conns (many connections).
stream_count=1000 stream_tokens=50 token_delay_ms=20 stream_ttft_ms=20 ramp_ms=1000 streams_client=""
c1_rounds=5 c1_duration=3 idle_conns=10000 idle_hold=5 idle_ramp_ms=2000
conn_streams=5000 conn_stream_tokens=50 conn_token_delay_ms=120 conn_ramp_ms=5000
proxy_cpu="" load_cpu="" backend_workers=1 ready_timeout=20 noise_limit=15

usage() {
  cat <<EOF
usage: benches/wrk/run.sh [options]
  --duration SECS      length of one wrk measurement (default $duration)
  --repeat N           rounds; each figure is the median over them (default $repeat)
  --connections N      wrk connections (default $connections)
  --wrk-threads N      wrk threads (default $wrk_threads)
  --ttft-requests N    streamed requests per time-to-first-token measurement (default $ttft_requests)
  --quick              smoke test: 1 s, 1 round, 20 streamed requests, 50 streams of 10 tokens,
                       one 1 s c1 round, 200 idle connections and 100 streams per proxy; exit
                       non-zero if any target had errors or answered no requests
  --targets LIST       comma-separated subset of: $targets
  --bin PATH           switchyard binary to test (default: cargo build --release in this repo)
  --no-build           do not build switchyard; use the binary already built
  --compare PATH       another switchyard binary, measured as the target "compare" in the same
                       rounds and with the same config as switchyard (added to --targets); the
                       report gives its req/s and CPU per request as ratios to switchyard's
  --ttft-client PATH   an already built benches/ttft.rs executable (default: cargo builds it)
  --floor-bin PATH     an already built benches/pingora_floor.rs executable (default: cargo
                       builds it); the "pingora" target is Pingora's proxy with no logic
  --streams N          streams target: concurrent SSE streams per run (default $stream_count)
  --stream-tokens N    streams target: tokens per stream, ${token_delay_ms} ms apart (default $stream_tokens)
  --c1-rounds N        c1 target: wrk -t1 -c1 rounds per target (default $c1_rounds)
  --c1-duration SECS   c1 target: length of one round (default $c1_duration)
  --idle-conns N       conns target: idle keep-alive connections per proxy (default $idle_conns)
  --idle-hold SECS     conns target: how long they stay idle (default $idle_hold)
  --conn-streams N     conns target: concurrent streams per proxy (default $conn_streams)
  --conn-stream-tokens N  conns target: tokens per stream of those, ${conn_token_delay_ms} ms apart, all
                       started within $((conn_ramp_ms / 1000)) s (default $conn_stream_tokens)
  --streams-client PATH   an already built benches/streams/ executable (default: cargo builds it)
  --proxy-cpu N        CPU for the proxy under test (default 0 when there are 2+ CPUs)
  --load-cpu N         CPU for wrk, the stand-in backend and the simulator (default 1)
  --backend-workers N  nginx workers of the stand-in backend (default $backend_workers)
  --noise-limit PCT    a round during which other work used more than PCT% of a CPU counts as
                       disturbed and is made up at the end, up to --repeat times (default $noise_limit)
  --out FILE           also write the report (markdown) to FILE
  --keep               keep the temporary directory (configs, logs, raw wrk output)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2%s}; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --wrk-threads) wrk_threads=$2; shift 2 ;;
    --ttft-requests) ttft_requests=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --targets) targets=$2; shift 2 ;;
    --bin) bin=$2; build=0; shift 2 ;;
    --no-build) build=0; shift ;;
    --compare) compare_bin=$2; shift 2 ;;
    --ttft-client) ttft_client=$2; shift 2 ;;
    --floor-bin) floor_client=$2; shift 2 ;;
    --streams) stream_count=$2; shift 2 ;;
    --stream-tokens) stream_tokens=$2; shift 2 ;;
    --c1-rounds) c1_rounds=$2; shift 2 ;;
    --c1-duration) c1_duration=${2%s}; shift 2 ;;
    --idle-conns) idle_conns=$2; shift 2 ;;
    --idle-hold) idle_hold=${2%s}; shift 2 ;;
    --conn-streams) conn_streams=$2; shift 2 ;;
    --conn-stream-tokens) conn_stream_tokens=$2; shift 2 ;;
    --streams-client) streams_client=$2; shift 2 ;;
    --proxy-cpu) proxy_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --backend-workers) backend_workers=$2; shift 2 ;;
    --noise-limit) noise_limit=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  duration=1 repeat=1 ttft_requests=20
  stream_count=50 stream_tokens=10 c1_rounds=1 c1_duration=1 idle_conns=200 idle_hold=1
  conn_streams=100 conn_stream_tokens=10 conn_token_delay_ms=20 conn_ramp_ms=100 idle_ramp_ms=500 ramp_ms=100
fi
for n in "$duration" "$repeat" "$connections" "$wrk_threads" "$ttft_requests" "$backend_workers" "$noise_limit" \
  "$stream_count" "$stream_tokens" "$c1_rounds" "$c1_duration" "$idle_conns" "$idle_hold" "$conn_streams" \
  "$conn_stream_tokens"; do
  case "$n" in ''|*[!0-9]*|0) echo "run.sh: expected a positive whole number, got '$n'" >&2; exit 2 ;; esac
done
want() { case ",$targets," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
[ -n "$compare_bin" ] && ! want compare && targets="$targets,compare"

bench_tag=bench
# shellcheck source=../lib.sh
. "$here/../lib.sh"
# shellcheck source=llm.sh
. "$here/llm.sh"

# ---------------------------------------------------------------------------------------------
# Tools. nginx and HAProxy are the peers; nginx is also the stand-in backend.
# ---------------------------------------------------------------------------------------------
bench_tools

# ---------------------------------------------------------------------------------------------
# Scratch directory and process bookkeeping.
# ---------------------------------------------------------------------------------------------
bench_scratch switchyard-bench "configs, logs, raw wrk output"

# CPU placement: the proxy under test gets a CPU of its own; wrk, the stand-in backend and the
# simulator share the other. The direct row runs on that same shared CPU and is the most that
# side can serve; the CPU and load CPU columns then show, row by row, which side set the pace.
ncpu=$(nproc)
bench_placement "wrk, backend and simulator"
# The conns row holds thousands of connections per process: raise the open-files limit (inherited
# by everything started below) first, and stop now if it cannot go high enough.
if want conns; then llm_raise_nofile; fi

# Peak resident set (VmHWM, kB) summed over a process and its children (nginx master + workers).
peak_rss_kb() {
  local root=$1 total=0 p kb
  for p in $root $(cat /proc/"$root"/task/*/children 2>/dev/null); do
    kb=$(awk '/^VmHWM:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)
    total=$((total + ${kb:-0}))
  done
  echo "$total"
}

chat_path=/v1/chat/completions
body='{"model":"bench-model","messages":[{"role":"system","content":"You are a concise assistant."},{"role":"user","content":"Summarise the plot of Hamlet in one sentence."}],"temperature":0,"max_tokens":64,"stream":false}'
post=(-X POST -H 'content-type: application/json' --data-binary "$body")

# ---------------------------------------------------------------------------------------------
# Build, before anything runs: one release build of the switchyard binary, the ttft client
# (benches/ttft.rs) and the Pingora floor (benches/pingora_floor.rs), so all share one compiled
# crate.
# ---------------------------------------------------------------------------------------------
sy_bin="" sy_problem="" ttft_bin=$ttft_client ttft_problem="" floor_bin=$floor_client floor_problem=""
streams_bin=$streams_client streams_problem="" llm_problem=""
sy_rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
[ -n "$bin" ] && sy_rev="binary given with --bin"
if want switchyard || want cache || want ttft || want pingora || llm_wanted; then
  target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
  target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
  cargo_targets=()
  [ "$build" = 1 ] && [ -z "$bin" ] && cargo_targets+=(--bin switchyard)
  want ttft && [ -z "$ttft_client" ] && cargo_targets+=(--bench ttft)
  want pingora && [ -z "$floor_client" ] && cargo_targets+=(--bench pingora_floor)
  { want streams || want conns; } && [ -z "$streams_client" ] && cargo_targets+=(--bench streams)
  if [ ${#cargo_targets[@]} -gt 0 ]; then
    log "cargo build --release ${cargo_targets[*]} (in $repo; log: $tmp/cargo-build.log)"
    if (cd "$repo" && cargo build --release "${cargo_targets[@]}" --message-format=json \
      >"$tmp/cargo-build.json" 2>"$tmp/cargo-build.log"); then
      ttft_bin=$(grep '"name":"ttft"' "$tmp/cargo-build.json" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
      [ -n "$floor_client" ] || floor_bin=$(grep '"name":"pingora_floor"' "$tmp/cargo-build.json" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
      [ -n "$streams_client" ] || streams_bin=$(grep '"name":"streams"' "$tmp/cargo-build.json" |
        sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
    else
      sy_problem="cargo build --release failed (see $tmp/cargo-build.log)"
      ttft_problem=$sy_problem floor_problem=$sy_problem streams_problem=$sy_problem
    fi
  fi
  sy_bin=${bin:-$target_dir/release/switchyard}
  if [ -z "$sy_problem" ] && [ ! -x "$sy_bin" ]; then
    sy_problem="no switchyard binary at $sy_bin"
  fi
  if want ttft && [ -z "$ttft_problem" ] && [ ! -x "$ttft_bin" ]; then
    ttft_problem="the ttft client was not built (is the [[bench]] entry for ttft in Cargo.toml?)"
  fi
  if want pingora && [ -z "$floor_problem" ] && [ ! -x "$floor_bin" ]; then
    floor_problem="the Pingora floor was not built (is the [[bench]] entry for pingora_floor in Cargo.toml?)"
  fi
  if { want streams || want conns; } && [ -z "$streams_problem" ] && [ ! -x "$streams_bin" ]; then
    streams_problem="the streams client was not built (is the [[bench]] entry for streams in Cargo.toml?)"
  fi
  [ -n "$sy_problem" ] && log "switchyard rows skipped: $sy_problem"
fi

# ---------------------------------------------------------------------------------------------
# Stand-in backend: nginx returning a fixed chat.completion on three ports, two for the primary
# group and one for the secondary. x-backend says which port answered (used to check the split).
# ---------------------------------------------------------------------------------------------
b1=$(free_port) b2=$(free_port) b3=$(free_port)
completion='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Prince Hamlet feigns madness to avenge his murdered father, and the court ends in a pile of bodies."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":21,"total_tokens":52}}'
mkdir -p "$tmp/backend" "$tmp/nginx"
backend_server() {
  cat <<EOF
    server {
        listen 127.0.0.1:$1 reuseport backlog=4096;
        location / {
            default_type application/json;
            add_header x-backend $2 always;
            return 200 '$completion';
        }
    }
EOF
}
cat >"$tmp/backend/nginx.conf" <<EOF
# Stand-in model backend for the benchmark.
worker_processes $backend_workers;
daemon off;
pid $tmp/backend/nginx.pid;
error_log $tmp/backend/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $tmp/backend;
$(backend_server "$b1" p1)
$(backend_server "$b2" p2)
$(backend_server "$b3" s1)
}
EOF
start backend "${on_load_cpu[@]}" nginx -e "$tmp/backend/error.log" -p "$tmp/backend" -c "$tmp/backend/nginx.conf"
backend_pid=$started_pid
for p in $b1 $b2 $b3; do
  wait_ok "http://127.0.0.1:$p$chat_path" 10 "${post[@]}" || die "stand-in backend did not start; see $tmp/backend.log"
done
log "stand-in backend on ports $b1 $b2 (primary) and $b3 (secondary)"

# ---------------------------------------------------------------------------------------------
# The peers. Each: one worker, keep-alive to the backend, 90/10 across two groups, one retry on
# connect failures, timeouts and 502/503/504, no health checks, no access log.
# ---------------------------------------------------------------------------------------------
declare -A port pid_of note
port[direct]=$b1
pid_of[direct]=$backend_pid

if want nginx || want c1; then
  port[nginx]=$(free_port)
  cat >"$tmp/nginx/nginx.conf" <<EOF
# nginx as the edge balancer, equivalent to the switchyard config.
worker_processes 1;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $tmp/nginx/client_body;
    proxy_temp_path $tmp/nginx/proxy;

    upstream primary {
        server 127.0.0.1:$b1;
        server 127.0.0.1:$b2;
        keepalive 64;
        keepalive_requests 1000000;
    }
    upstream secondary {
        server 127.0.0.1:$b3;
        keepalive 64;
        keepalive_requests 1000000;
    }
    # A fresh random key per request, so each request goes 90/10 on its own, as in switchyard.
    split_clients "\${request_id}" \$group {
        90%     primary;
        *       secondary;
    }
    server {
        listen 127.0.0.1:${port[nginx]} reuseport backlog=4096;
        location /v1/ {
            proxy_pass http://\$group;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 2;
        }
    }
}
EOF
  start nginx "${on_proxy_cpu[@]}" nginx -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf"
  pid_of[nginx]=$started_pid
  wait_ok "http://127.0.0.1:${port[nginx]}$chat_path" 10 "${post[@]}" || die "nginx did not start; see $tmp/nginx.log"
  log "nginx on port ${port[nginx]}"
fi

if want haproxy || want c1; then
  port[haproxy]=$(free_port)
  # Two backends picked per request with rand(100): the same shape as nginx's split_clients and
  # switchyard's split (two groups, each with its own balancing and retries). One backend with
  # weights 45:45:10 would give the same shares but merge the groups into one pool.
  cat >"$tmp/haproxy.cfg" <<EOF
# HAProxy as the edge balancer, equivalent to the switchyard config.
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
    retries 1
    retry-on conn-failure empty-response response-timeout 502 503 504
    option redispatch 1
frontend edge
    bind 127.0.0.1:${port[haproxy]}
    http-request return status 404 unless { path_beg /v1/ }
    use_backend secondary if { rand(100) lt 10 }
    default_backend primary
backend primary
    balance roundrobin
    server p1 127.0.0.1:$b1
    server p2 127.0.0.1:$b2
backend secondary
    server s1 127.0.0.1:$b3
EOF
  haproxy -c -q -f "$tmp/haproxy.cfg" || die "haproxy rejected $tmp/haproxy.cfg"
  start haproxy "${on_proxy_cpu[@]}" haproxy -db -f "$tmp/haproxy.cfg"
  pid_of[haproxy]=$started_pid
  wait_ok "http://127.0.0.1:${port[haproxy]}$chat_path" 10 "${post[@]}" || die "haproxy did not start; see $tmp/haproxy.log"
  log "haproxy on port ${port[haproxy]}"
fi

# The floor: Pingora's own proxy with no logic (benches/pingora_floor.rs), to one backend port of
# the primary group. It does less than the balancers (no split, no retries): what Pingora itself
# costs per request, before anything switchyard adds.
if want pingora; then
  if [ -n "$floor_problem" ]; then
    note[pingora]="failed: $floor_problem"
  else
    port[pingora]=$(free_port)
    start pingora "${on_proxy_cpu[@]}" "$floor_bin" --listen "127.0.0.1:${port[pingora]}" \
      --upstream "127.0.0.1:$b1" --threads 1
    pid_of[pingora]=$started_pid
    if wait_ok "http://127.0.0.1:${port[pingora]}$chat_path" 10 "${post[@]}"; then
      log "pingora (no logic) on port ${port[pingora]}"
    else
      note[pingora]="failed: did not answer within 10 s (log: $tmp/pingora.log)"
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# switchyard: the plain route, the cached route, and a route to the simulator for streaming.
# ---------------------------------------------------------------------------------------------
# sy_config NAME LISTEN ADMIN ROUTE_EXTRA CLUSTERS_YAML SPLIT_YAML: write $tmp/NAME.yaml
sy_config() {
  mkdir -p "$tmp/$1"
  cat >"$tmp/$1.yaml" <<EOF
server:
  threads: 1
  grace_period: 1s
  graceful_shutdown_timeout: 1s
  pid_file: $tmp/$1/switchyard.pid
  upgrade_sock: $tmp/$1/upgrade.sock
listeners:
  - addr: "127.0.0.1:$2"
admin:
  addr: "127.0.0.1:$3"
clusters:
$5
routes:
  - name: chat
    match: { path_prefix: "/v1/" }
    split:
$6
    timeouts: { connect: 1s, first_byte: 30s, idle: 60s, total: 300s }
    retry: { attempts: 2 }
$4
EOF
}
bench_clusters="  primary:
    balance: round_robin
    peers:
      - { addr: \"127.0.0.1:$b1\" }
      - { addr: \"127.0.0.1:$b2\" }
  secondary:
    peers:
      - { addr: \"127.0.0.1:$b3\" }"
bench_split="      - { cluster: primary, weight: 90 }
      - { cluster: secondary, weight: 10 }"

# sy_start NAME ADMIN_PORT LISTEN_PORT [BINARY]: start switchyard (or BINARY) on
# $tmp/NAME.yaml, wait for /readyz and for one chat answer.
# Sets pid_of[NAME]; on failure sets note[NAME] and returns 1.
sy_start() {
  local name=$1 admin=$2 listen=$3
  start "$name" "${on_proxy_cpu[@]}" "${4:-$sy_bin}" -c "$tmp/$name.yaml"
  pid_of[$name]=$started_pid
  if ! wait_ok "http://127.0.0.1:$admin/readyz" "$ready_timeout"; then
    note[$name]="failed: not ready within ${ready_timeout}s (log: $tmp/$name.log)"
    log "switchyard ($name) $(tail -n 3 "$tmp/$name.log" | tr '\n' ' ')"
    return 1
  fi
  if ! wait_ok "http://127.0.0.1:$listen$chat_path" 5 "${post[@]}"; then
    note[$name]="failed: ready, but chat requests fail (log: $tmp/$name.log)"
    return 1
  fi
}

if want switchyard || want c1; then
  if [ -n "$sy_problem" ]; then
    note[switchyard]="failed: $sy_problem"
  else
    port[switchyard]=$(free_port)
    a=$(free_port)
    sy_config switchyard "${port[switchyard]}" "$a" "" "$bench_clusters" "$bench_split"
    if sy_start switchyard "$a" "${port[switchyard]}"; then
      log "switchyard on port ${port[switchyard]} ($sy_bin, $sy_rev)"
    fi
  fi
fi

# The compared build: another binary, the same config, measured in the same rounds.
if want compare; then
  if [ -z "$compare_bin" ] || [ ! -x "$compare_bin" ]; then
    note[compare]="failed: no binary to compare (--compare PATH; got '${compare_bin}')"
  else
    port[compare]=$(free_port)
    a=$(free_port)
    sy_config compare "${port[compare]}" "$a" "" "$bench_clusters" "$bench_split"
    if sy_start compare "$a" "${port[compare]}" "$compare_bin"; then
      log "compared build on port ${port[compare]} ($compare_bin)"
    fi
  fi
fi

# The cached route: same clusters, the route caches for 10 minutes. The row counts only if the
# running switchyard accepts the config and answers the repeated prompt with x-cache-status: HIT.
if want cache; then
  if [ -n "$sy_problem" ]; then
    note[cache]="failed: $sy_problem"
  else
    port[cache]=$(free_port)
    a=$(free_port)
    sy_config cache "${port[cache]}" "$a" "    cache: { ttl: 10m }" "$bench_clusters" "$bench_split"
    if ! "$sy_bin" check -c "$tmp/cache.yaml" >"$tmp/cache-check.log" 2>&1; then
      note[cache]="n/a (cache not built)"
    elif sy_start cache "$a" "${port[cache]}"; then
      curl -s --noproxy '*' -o /dev/null --max-time 5 "${post[@]}" "http://127.0.0.1:${port[cache]}$chat_path" || true
      hit=$(curl -s --noproxy '*' -o /dev/null --max-time 5 -w '%header{x-cache-status}' "${post[@]}" \
        "http://127.0.0.1:${port[cache]}$chat_path" || true)
      if [ "$hit" != HIT ]; then
        note[cache]="n/a (cache not built)"
        kill -TERM -- "-${pid_of[cache]}" 2>/dev/null || true
      else
        log "switchyard with cache on port ${port[cache]} (second request: HIT)"
      fi
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# Measurements: rounds of every target in turn, so drift hits them all alike.
# ---------------------------------------------------------------------------------------------
rows=()
for t in direct nginx haproxy pingora switchyard compare cache; do
  want "$t" || continue
  rows+=("$t")
done
runnable() { [ -n "${port[$1]:-}" ] && [ -z "${note[$1]:-}" ]; }

mkdir -p "$tmp/wrk"
# CPU time (clock ticks, user + system) of a process and its children, all threads included.
cpu_ticks() {
  local root=$1 total=0 p t
  for p in $root $(cat /proc/"$root"/task/*/children 2>/dev/null); do
    t=$(sed 's/^.*) //' /proc/"$p"/stat 2>/dev/null | awk '{ print $12 + $13 }' || true)
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
# Busy and total clock ticks of the load CPU (wrk + backend), from /proc/stat: "busy total".
load_cpu_ticks() {
  [ -n "$load_cpu" ] || { echo "0 0"; return; }
  awk -v c="cpu$load_cpu" '$1 == c { t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t }' /proc/stat
}

# Busy clock ticks of the whole machine (user, nice, system, irq, softirq, steal), from /proc/stat.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# run_wrk TARGET SECS OUTFILE. Besides wrk's BENCH line, appends to OUTFILE:
#   CPU ticks=N        the target's CPU time during the run
#   LOAD busy=P        how busy the load CPU was, in percent
#   OTHERS busy=P      CPU time the machine spent on anything but the target, the backend and wrk,
#                      in percent of one CPU: other people's work (and kernel time no process is
#                      charged for), floored at 0 (tick rounding). High values mean the
#                      round was disturbed.
run_wrk() {
  local before load_before load_after machine_before backend_before wrk_cpu wall proxy_ticks backend_ticks
  local TIMEFORMAT='%R %U %S'
  before=$(cpu_ticks "${pid_of[$1]}")
  backend_before=$(cpu_ticks "$backend_pid")
  machine_before=$(machine_ticks)
  load_before=$(load_cpu_ticks)
  { time timeout $(($2 + 30)) "${on_load_cpu[@]}" wrk -t "$wrk_threads" -c "$connections" -d "${2}s" \
    --latency --timeout 5s -s "$here/chat.lua" "http://127.0.0.1:${port[$1]}$chat_path" >"$3" 2>&1 ; } \
    2>"$3.time" || log "wrk against $1 exited with an error (see $3)"
  proxy_ticks=$(($(cpu_ticks "${pid_of[$1]}") - before))
  backend_ticks=$(($(cpu_ticks "$backend_pid") - backend_before))
  [ "${pid_of[$1]}" = "$backend_pid" ] && backend_ticks=0
  load_after=$(load_cpu_ticks)
  wrk_cpu=$(awk -v hz="$clk_tck" 'NF == 3 { printf "%d", ($2 + $3) * hz }' "$3.time")
  wall=$(awk 'NF == 3 { print $1 }' "$3.time")
  echo "CPU ticks=$proxy_ticks" >>"$3"
  echo "LOAD $load_before $load_after" | awk '$5 > $3 { printf "LOAD busy=%.1f\n", 100 * ($4 - $2) / ($5 - $3) }' >>"$3"
  awk -v all=$(($(machine_ticks) - machine_before - proxy_ticks - backend_ticks - ${wrk_cpu:-0})) \
    -v hz="$clk_tck" -v secs="${wall:-$2}" 'BEGIN { o = 100 * all / hz / secs; printf "OTHERS busy=%.1f\n", o < 0 ? 0 : o }' >>"$3"
}

# Which share of 200 requests reached the secondary group (checks the configs are equivalent).
secondary_share() {
  local n=200
  curl -s --noproxy '*' --max-time 20 -w '\nx-backend=%header{x-backend}\n' "${post[@]}" \
    "http://127.0.0.1:${port[$1]}$chat_path?[1-$n]" 2>/dev/null | awk -v n=$n '
      $0 == "x-backend=s1" { s++ } END { printf "%d%%", 100 * s / n }'
}
declare -A share
for t in "${rows[@]}"; do
  runnable "$t" || continue
  case "$t" in direct|cache|pingora) ;; *) share[$t]=$(secondary_share "$t") ;; esac
  if [ "$quick" = 0 ]; then
    log "warm-up: $t (1 s)"
    run_wrk "$t" 1 "$tmp/wrk/$t.warmup.txt"
  fi
done

# A round counts as disturbed when the rest of the machine used more than noise_limit percent of a
# CPU during it (see run_wrk). Disturbed rounds are made up at the end, at most --repeat extra
# rounds per target, and the figures come from the undisturbed ones.
disturbed() { # FILE
  awk -v o="$(sed -n 's/^OTHERS busy=//p' "$1")" -v l="$noise_limit" 'BEGIN { exit !(o != "" && o + 0 > l + 0) }'
}
declare -A rounds clean
round() { # TARGET
  local t=$1 f
  rounds[$t]=$((${rounds[$t]:-0} + 1))
  f=$tmp/wrk/$t.${rounds[$t]}.txt
  log "round ${rounds[$t]}: $t (${duration} s, $connections connections)"
  run_wrk "$t" "$duration" "$f"
  if disturbed "$f"; then
    log "  disturbed: other work used $(sed -n 's/^OTHERS busy=//p' "$f")% of a CPU"
  else
    clean[$t]=$((${clean[$t]:-0} + 1))
  fi
}
for r in $(seq 1 "$repeat"); do
  for t in "${rows[@]}"; do
    runnable "$t" && round "$t"
  done
done
if [ "$quick" = 0 ]; then
  for extra in $(seq 1 "$repeat"); do
    for t in "${rows[@]}"; do
      runnable "$t" && [ "${clean[$t]:-0}" -lt "$repeat" ] && round "$t"
    done
  done
fi

declare -A rss
for t in "${rows[@]}"; do
  runnable "$t" && rss[$t]=$(peak_rss_kb "${pid_of[$t]}")
done

# ---------------------------------------------------------------------------------------------
# Streaming: time to first data: line, direct to the simulator and through switchyard.
# ---------------------------------------------------------------------------------------------
ttft_note="" ttft_direct="" ttft_proxy=""
# ttft_run SIDE URL: run the client; sets ttft_direct or ttft_proxy, or ttft_note on failure.
ttft_run() {
  local line
  log "time to first token, $1 ($ttft_requests requests)"
  timeout 300 "${on_load_cpu[@]}" "$ttft_bin" --url "$2" --requests "$ttft_requests" \
    >"$tmp/ttft-$1.txt" 2>&1 || true
  line=$(grep '^TTFT ' "$tmp/ttft-$1.txt" || true)
  if [ -z "$line" ]; then
    ttft_note="failed: the ttft client printed no result (see $tmp/ttft-$1.txt)"
    return 1
  fi
  if [ "$1" = direct ]; then ttft_direct=$line; else ttft_proxy=$line; fi
}
if want ttft; then
  sim=$(free_port)
  sim_body=${body/'"stream":false'/'"stream":true'}
  sim_post=(-X POST -H 'content-type: application/json' --data-binary "$sim_body")
  if [ -n "$sy_problem" ]; then
    ttft_note="failed: $sy_problem"
  elif [ -n "$ttft_problem" ]; then
    ttft_note="failed: $ttft_problem"
  else
    start sim "${on_load_cpu[@]}" "$sy_bin" sim --listen "127.0.0.1:$sim" --name sim0 \
      --ttft 5ms --token-delay 1ms --tokens 8
    port[stream]=$(free_port)
    a=$(free_port)
    sy_config stream "${port[stream]}" "$a" "" "  sim:
    peers:
      - { addr: \"127.0.0.1:$sim\" }" "      - { cluster: sim, weight: 100 }"
    if ! wait_ok "http://127.0.0.1:$sim$chat_path" 10 "${sim_post[@]}"; then
      ttft_note="failed: the simulator did not start (log: $tmp/sim.log)"
    elif ! sy_start stream "$a" "${port[stream]}"; then
      ttft_note=${note[stream]}
    else
      ttft_run direct "http://127.0.0.1:$sim$chat_path" &&
        ttft_run proxy "http://127.0.0.1:${port[stream]}$chat_path" || true
    fi
  fi
fi

# ---------------------------------------------------------------------------------------------
# The LLM-traffic rows (llm.sh): streams, concurrency 1, many connections.
# ---------------------------------------------------------------------------------------------
llm_setup
llm_streams_row
llm_c1_row
llm_conns_row

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
kv() { # LINE KEY -> value of KEY=value in LINE
  printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
median() { # numbers on stdin -> median
  sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
fmt_us() { awk -v u="$1" 'BEGIN { if (u == "") print "-"; else if (u < 1000) printf "%d µs", u; else printf "%.2f ms", u / 1000 }'; }
fmt_int() { awk -v n="$1" 'BEGIN { s = sprintf("%d", n); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }; print s r }'; }
pct() { awk -v c="$1" 'BEGIN { if (c == "") print "-"; else printf "%.0f%%", c }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A rps p50 p99 p999 errs reqs cpu load others
failures=()
for t in "${rows[@]}"; do
  runnable "$t" || continue
  all_files=() used=()
  for f in "$tmp"/wrk/"$t".[0-9]*.txt; do
    [ -f "$f" ] || continue
    all_files+=("$f")
    disturbed "$f" || used+=("$f")
  done
  [ ${#used[@]} -gt 0 ] || used=("${all_files[@]}")
  # Errors count in every round, disturbed or not; the figures come from the rounds in "used".
  errs[$t]=$(cat "${all_files[@]}" /dev/null | grep '^BENCH ' | while read -r l; do
    echo $(($(kv "$l" non2xx) + $(kv "$l" connect) + $(kv "$l" read) + $(kv "$l" write) + $(kv "$l" timeout)))
  done | awk '{ s += $1 } END { print s + 0 }')
  reqs[$t]=$(cat "${all_files[@]}" /dev/null | grep '^BENCH ' | while read -r l; do kv "$l" requests; done |
    awk '{ s += $1 } END { print s + 0 }')
  lines=$(cat "${used[@]}" /dev/null | grep '^BENCH ' || true)
  if [ -z "$lines" ]; then
    note[$t]="failed: wrk printed no result (see $tmp/wrk)"
    continue
  fi
  field() { printf '%s\n' "$lines" | while read -r l; do kv "$l" "$1"; done; }
  rps[$t]=$(field rps | median)
  p50[$t]=$(field p50_us | median)
  p99[$t]=$(field p99_us | median)
  p999[$t]=$(field p999_us | median)
  cpu[$t]=$(for f in "${used[@]}"; do
    d=$(kv "$(grep '^BENCH ' "$f" || true)" duration_us)
    k=$(sed -n 's/^CPU ticks=//p' "$f")
    [ -n "$d" ] && [ -n "$k" ] && awk -v k="$k" -v d="$d" -v hz="$clk_tck" 'BEGIN { print 100 * k / hz / (d / 1e6) }'
  done | median)
  load[$t]=$(cat "${used[@]}" | sed -n 's/^LOAD busy=//p' | median)
  others[$t]=$(cat "${used[@]}" | sed -n 's/^OTHERS busy=//p' | sort -g | tail -n 1)
  ran=$(printf '%s\n' "$lines" | wc -l)
  if [ "${clean[$t]:-0}" -eq 0 ]; then
    if [ "${#all_files[@]}" -eq 1 ]; then
      note[$t]="its one round was disturbed by other work"
    else
      note[$t]="all ${#all_files[@]} rounds were disturbed by other work; figures from all of them"
    fi
  elif [ "$ran" -lt "$repeat" ]; then
    note[$t]="$ran undisturbed rounds of ${#all_files[@]} run; figures from those $ran"
  elif [ "${#all_files[@]}" -gt "$ran" ]; then
    note[$t]="$((${#all_files[@]} - ran)) disturbed round(s) made up; figures from $ran undisturbed ones"
  fi
done

label() {
  case "$1" in
    direct) echo "direct (backend, the ceiling)" ;;
    nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*/||')" ;;
    haproxy) echo "haproxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')" ;;
    pingora) echo "pingora (no logic)" ;;
    switchyard) echo "switchyard ($sy_rev)" ;;
    cache) echo "switchyard, cache hit" ;;
    compare) echo "switchyard, compared build" ;;
  esac
}

report=$tmp/report.md
{
  echo "### switchyard edge benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "Machine: $ncpu CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)." \
    "Placement: $placement. wrk: $connections connections, $wrk_threads thread(s), ${duration} s per" \
    "measurement, $repeat round(s), medians shown; errors are summed over all rounds. Every proxy runs" \
    "one worker. \"to secondary\" is the share of 200 requests that reached the secondary group" \
    "(configured 10%). CPU is the proxy's CPU time over the run's wall time (100% = its one" \
    "CPU busy throughout); on the direct row, and for peak RSS there, it is the backend's." \
    "load CPU is how busy the CPU shared by wrk and the backend was: below 100% on a proxy's row" \
    "means the load side had room to spare and the proxy set the pace. others is the most CPU" \
    "(in % of one CPU) that anything else on the machine used during a round the row's figures" \
    "come from; a round where it passed ${noise_limit}% counts as disturbed and is run again."
  if [ -n "$sy_bin" ]; then
    echo
    echo "switchyard: \`$sy_bin\` ($sy_rev)."
  fi
  if [ ${#rows[@]} -gt 0 ]; then
  echo
  echo "| target | req/s | vs nginx | vs direct | p50 | p99 | p99.9 | errors | CPU | load CPU | others | peak RSS | to secondary |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${rows[@]}"; do
    if [ -z "${rps[$t]:-}" ]; then
      echo "| $(label "$t") | ${note[$t]:-failed} | | | | | | | | | | | |"
      continue
    fi
    mem="-"
    [ -n "${rss[$t]:-}" ] && mem=$(awk -v k="${rss[$t]}" 'BEGIN { printf "%.1f MiB", k / 1024 }')
    [ "$t" = direct ] && mem="$mem (backend)"
    echo "| $(label "$t") | $(fmt_int "${rps[$t]}") | $(ratio "${rps[$t]}" "${rps[nginx]:-}") |" \
      "$(ratio "${rps[$t]}" "${rps[direct]:-}") | $(fmt_us "${p50[$t]}") | $(fmt_us "${p99[$t]}") |" \
      "$(fmt_us "${p999[$t]}") | ${errs[$t]} | $(pct "${cpu[$t]}") |" \
      "$(pct "${load[$t]:-}") | $(pct "${others[$t]:-}") | $mem | ${share[$t]:--} |"
  done
  for t in "${rows[@]}"; do
    [ -n "${rps[$t]:-}" ] && [ -n "${note[$t]:-}" ] && echo && echo "Note ($t): ${note[$t]}"
  done
  if [ -n "${rps[compare]:-}" ] && [ -n "${rps[switchyard]:-}" ]; then
    echo
    echo "Compared build: \`$compare_bin\`. Against switchyard ($sy_rev), medians of the same rounds:" \
      "req/s $(awk -v a="${rps[compare]}" -v b="${rps[switchyard]}" 'BEGIN { printf "%.3f", a / b }'), CPU per request" \
      "$(awk -v a="${cpu[compare]}" -v ra="${rps[compare]}" -v b="${cpu[switchyard]}" -v rb="${rps[switchyard]}" \
        'BEGIN { if (b * ra > 0) printf "%.3f", (a / ra) / (b / rb); else print "-" }')."
  fi
  fi
  if want ttft; then
    echo
    echo "Streaming ($ttft_requests sequential requests each; simulator: ttft 5ms, token delay 1ms," \
      "8 tokens): time to the first \`data:\` line."
    echo
    echo "| path | p50 | p99 |"
    echo "|---|---:|---:|"
    if [ -n "$ttft_note" ]; then
      echo "| time to first token | $ttft_note | |"
    else
      d50=$(kv "$ttft_direct" p50_us) d99=$(kv "$ttft_direct" p99_us)
      s50=$(kv "$ttft_proxy" p50_us) s99=$(kv "$ttft_proxy" p99_us)
      echo "| direct to the simulator | $(fmt_us "$d50") | $(fmt_us "$d99") |"
      echo "| through switchyard | $(fmt_us "$s50") | $(fmt_us "$s99") |"
      echo "| **added by switchyard** | **$(fmt_us $((s50 - d50)))** | **$(fmt_us $((s99 - d99)))** |"
      for side in direct proxy; do
        e=$(kv "$(grep '^TTFT ' "$tmp/ttft-$side.txt")" errors)
        [ "${e:-1}" = 0 ] || echo "| errors ($side) | $e | |"
      done
    fi
  fi
  llm_report
} >"$report"

cat "$report"
[ -n "$out" ] && cp "$report" "$out"

# ---------------------------------------------------------------------------------------------
# Verdict. Only errors and silence fail the run; speed never does.
# ---------------------------------------------------------------------------------------------
for t in "${rows[@]}"; do
  [ "${note[$t]:-}" = "n/a (cache not built)" ] && continue
  if [ -z "${rps[$t]:-}" ]; then
    n=${note[$t]:-no result}
    failures+=("$t: ${n#failed: }")
  elif [ "${reqs[$t]}" -eq 0 ]; then
    failures+=("$t: answered no requests")
  elif [ "${errs[$t]}" -ne 0 ]; then
    failures+=("$t: ${errs[$t]} errors")
  fi
done
if want ttft; then
  if [ -n "$ttft_note" ]; then
    failures+=("ttft: ${ttft_note#failed: }")
  else
    for side in direct proxy; do
      e=$(kv "$(grep '^TTFT ' "$tmp/ttft-$side.txt")" errors)
      [ "${e:-1}" = 0 ] || failures+=("ttft ($side): ${e:-?} errors")
    done
  fi
fi
llm_verdict
if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do log "FAIL $f"; done
  exit 1
fi
log "every target answered without errors"
