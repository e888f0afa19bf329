#!/usr/bin/env bash
# benches/chaos/run.sh: availability under chaos. The same seeded faults on the same simulated
# model servers (three primary, one secondary), the same requests at the same moments, through
# switchyard, nginx and HAProxy, and straight at one server as the baseline. Prints a markdown
# table (the share of requests answered correctly and completely, fallbacks apart, time to first
# token, requests that reached a model server more than once), what every failed request met, and
# draws the chart. Method and latest figures: benches/README.md, section "Chaos".
#
#   benches/chaos/run.sh             # full run: 90 s per target, about 8 minutes in all
#   benches/chaos/run.sh --quick     # CI smoke test: 6 s per target; fails only if a target
#                                    # answered no request correctly, never on a share
#
# Everything it writes goes to one mktemp -d directory; every process it starts is killed on exit.
# Traffic stays on 127.0.0.1. Run with --help for the options.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
command_line="benches/chaos/run.sh${*:+ $*}"

duration=90 rate=60 seed=1 timeout=20 quick=0 build=1 keep=0 bin="" load_bin="" out="" chart=""
schedule="reset=0.02,status503=0.03,hang=0.01,cut=0.02,slow=0.02" slow=3s down="0.30-0.55"
targets="direct,nginx,haproxy,switchyard" proxy_cpu="" load_cpu=""
declare -A config_of=([nginx]=$here/nginx.conf [haproxy]=$here/haproxy.cfg [switchyard]=$here/switchyard.yaml)
sim_ttft=100ms sim_token_delay=15ms tokens="8-40" stream_share=0.67

usage() {
  cat <<EOF
usage: benches/chaos/run.sh [options]
  --duration SECS     traffic per target (default $duration)
  --rate N            requests per second, Poisson arrivals (default $rate)
  --seed N            seed of the requests and of the fault schedule (default $seed)
  --schedule SPEC     the faults each server draws, with their shares (default
                      $schedule)
  --slow DURATION     first-token delay of the "slow" fault (default $slow)
  --down FROM-TO      p1 is killed at FROM and restarted at TO, as shares of the duration
                      (default $down)
  --timeout SECS      the client gives up on a request after this long (default $timeout)
  --quick             smoke test: 6 s per target at 30 requests/s; exit non-zero only if a
                      target answered no request correctly
  --targets LIST      comma-separated subset of: $targets
  --bin PATH          switchyard binary to test and to run the simulators with (default: cargo
                      build --release in this repo)
  --no-build          do not build; use the binaries already built
  --load-bin PATH     an already built benches/chaos (load generator and report)
  --config T=FILE     run target T (nginx, haproxy or switchyard) with FILE instead of the
                      config beside this script (same @...@ placeholders); repeatable
  --proxy-cpu N       CPU for the balancer under test (default 0 when there are 2+ CPUs)
  --load-cpu N        CPU for the load generator and the simulators (default 1)
  --out FILE          also write the report (markdown) to FILE
  --chart FILE        also write the chart (SVG) to FILE
  --keep              keep the temporary directory (configs, logs, records, arrival logs)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=${2%s}; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --schedule) schedule=$2; shift 2 ;;
    --slow) slow=$2; shift 2 ;;
    --down) down=$2; shift 2 ;;
    --timeout) timeout=${2%s}; shift 2 ;;
    --quick) quick=1; shift ;;
    --targets) targets=$2; shift 2 ;;
    --bin) bin=$2; build=0; shift 2 ;;
    --no-build) build=0; shift ;;
    --load-bin) load_bin=$2; shift 2 ;;
    --config) config_of[${2%%=*}]=$(realpath -m "${2#*=}"); shift 2 ;;
    --proxy-cpu) proxy_cpu=$2; shift 2 ;;
    --load-cpu) load_cpu=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --chart) chart=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
if [ "$quick" = 1 ]; then
  duration=6 rate=30 timeout=8
fi
for n in "$duration" "$rate" "$seed" "$timeout"; do
  case "$n" in ''|*[!0-9]*|0) echo "run.sh: expected a positive whole number, got '$n'" >&2; exit 2 ;; esac
done
case "$down" in
  0.[0-9]*-0.[0-9]*) ;;
  *) echo "run.sh: --down wants FROM-TO, shares of the duration such as 0.30-0.55" >&2; exit 2 ;;
esac
for t in ${targets//,/ }; do
  case "$t" in direct|nginx|haproxy|switchyard) ;; *) echo "run.sh: unknown target $t" >&2; exit 2 ;; esac
done
[ -n "$out" ] && out=$(realpath -m "$out")
[ -n "$chart" ] && chart=$(realpath -m "$chart")

bench_tag=chaos
# shellcheck source=../lib.sh
. "$here/../lib.sh"
bench_tools
bench_scratch switchyard-chaos "configs, logs, records, arrival logs"
bench_placement "the load generator and the simulators"
for t in date realpath sed; do command -v "$t" >/dev/null 2>&1 || die "$t is required"; done

# ---------------------------------------------------------------------------------------------
# Build: the switchyard binary (the balancer and the simulators) and benches/chaos (the load and
# the report), in one release build so they share one compiled crate.
# ---------------------------------------------------------------------------------------------
sy_rev=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
[ -n "$bin" ] && sy_rev="binary given with --bin"
target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p' || true)
target_dir=${target_dir:-${CARGO_TARGET_DIR:-$repo/target}}
cargo_targets=()
[ "$build" = 1 ] && [ -z "$bin" ] && cargo_targets+=(--bin switchyard)
[ -z "$load_bin" ] && cargo_targets+=(--bench chaos)
if [ ${#cargo_targets[@]} -gt 0 ]; then
  log "cargo build --release ${cargo_targets[*]} (in $repo; log: $tmp/cargo-build.log)"
  (cd "$repo" && cargo build --release "${cargo_targets[@]}" --message-format=json \
    >"$tmp/cargo-build.json" 2>"$tmp/cargo-build.log") || die "cargo build failed (see $tmp/cargo-build.log)"
  [ -n "$load_bin" ] || load_bin=$(grep '"name":"chaos"' "$tmp/cargo-build.json" |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1 || true)
fi
sy_bin=${bin:-$target_dir/release/switchyard}
[ -x "$sy_bin" ] || die "no switchyard binary at $sy_bin"
[ -n "$load_bin" ] && [ -x "$load_bin" ] || die "benches/chaos was not built (is its [[bench]] entry in Cargo.toml?)"

# ---------------------------------------------------------------------------------------------
# The simulated model servers: the same four for every target, started afresh for each one, on
# the same ports, with the same seeded schedule. Each draws a request's fate from the seed, its
# own name and the request's x-chaos-id, so a request meets the same fate at the same server
# behind every balancer, and a retry draws afresh.
# ---------------------------------------------------------------------------------------------
servers=(p1 p2 p3 s1)
declare -A sim_port sim_pid
for s in "${servers[@]}"; do sim_port[$s]=$(free_port); done

# sim_start TARGET SERVER: start (or restart) one simulator for TARGET's run.
sim_start() {
  local t=$1 s=$2
  start "$t-sim-$s" "${on_load_cpu[@]}" "$sy_bin" sim --listen "127.0.0.1:${sim_port[$s]}" --name "$s" \
    --ttft "$sim_ttft" --token-delay "$sim_token_delay" \
    --chaos "$schedule" --chaos-seed "$seed" --chaos-slow "$slow" \
    --arrivals-log "$tmp/$t/arrivals/$s.log"
  sim_pid[$s]=$started_pid
}

now_ms() { date +%s%3N; }
# Busy and total clock ticks of the whole machine, from /proc/stat: "busy total".
machine_ticks() { awk '$1 == "cpu" { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat; }

# fill TEMPLATE OUT TARGET: the config template with its @...@ placeholders filled in.
fill() {
  sed -e "s|@DIR@|$tmp/$3|g" -e "s|@LISTEN@|${port[$3]}|g" -e "s|@ADMIN@|${admin_port:-0}|g" \
    -e "s|@P1@|${sim_port[p1]}|g" -e "s|@P2@|${sim_port[p2]}|g" -e "s|@P3@|${sim_port[p3]}|g" \
    -e "s|@S1@|${sim_port[s1]}|g" "$1" >"$2"
}

chat_path=/v1/chat/completions
# A probe that no fault hits (x-sim-fail: none decides it), to see that a target answers.
probe=(-X POST -H 'content-type: application/json' -H 'x-sim-fail: none'
  --data-binary '{"model":"probe","messages":[{"role":"user","content":"ready?"}]}')

declare -A port label proxy_pid load_line busy
admin_port=""

# start_target TARGET: start its balancer (none for direct) and wait until it answers.
start_target() {
  local t=$1 dir=$tmp/$1
  case "$t" in
    direct)
      port[$t]=${sim_port[p1]}
      label[$t]="direct to one server (p1)"
      return 0
      ;;
    nginx)
      port[$t]=$(free_port)
      mkdir -p "$dir/client_body" "$dir/proxy_temp"
      fill "${config_of[nginx]}" "$dir/nginx.conf" "$t"
      nginx -t -q -e "$dir/nginx-error.log" -p "$dir" -c "$dir/nginx.conf" 2>"$dir/nginx-t.log" ||
        die "nginx rejected $dir/nginx.conf: $(cat "$dir/nginx-t.log")"
      start nginx "${on_proxy_cpu[@]}" nginx -e "$dir/nginx-error.log" -p "$dir" -c "$dir/nginx.conf"
      label[$t]="nginx $(nginx -v 2>&1 | sed 's|.*/||')"
      ;;
    haproxy)
      port[$t]=$(free_port)
      fill "${config_of[haproxy]}" "$dir/haproxy.cfg" "$t"
      haproxy -c -q -f "$dir/haproxy.cfg" || die "haproxy rejected $dir/haproxy.cfg"
      start haproxy "${on_proxy_cpu[@]}" haproxy -db -f "$dir/haproxy.cfg"
      label[$t]="HAProxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }' | sed 's/-.*//')"
      ;;
    switchyard)
      port[$t]=$(free_port)
      admin_port=$(free_port)
      fill "${config_of[switchyard]}" "$dir/switchyard.yaml" "$t"
      "$sy_bin" check -c "$dir/switchyard.yaml" >"$dir/check.log" 2>&1 ||
        die "switchyard rejected $dir/switchyard.yaml: $(cat "$dir/check.log")"
      start switchyard "${on_proxy_cpu[@]}" "$sy_bin" -c "$dir/switchyard.yaml"
      wait_ok "http://127.0.0.1:$admin_port/readyz" 20 ||
        die "switchyard not ready within 20 s (log: $tmp/switchyard.log)"
      label[$t]="switchyard ($sy_rev)"
      ;;
  esac
  proxy_pid[$t]=$started_pid
}

# run_target TARGET: fresh simulators, the balancer, the load with p1's death in the middle.
run_target() {
  local t=$1 dir=$tmp/$1 s kill_at back_at url rc=0
  mkdir -p "$dir/arrivals"
  : >"$dir/events.tsv"
  for s in "${servers[@]}"; do sim_start "$t" "$s"; done
  for s in "${servers[@]}"; do
    wait_ok "http://127.0.0.1:${sim_port[$s]}/health" 10 || die "simulator $s did not start (log: $tmp/$t-sim-$s.log)"
  done
  start_target "$t"
  url="http://127.0.0.1:${port[$t]}$chat_path"
  wait_ok "$url" 10 "${probe[@]}" || die "$t does not answer (logs in $tmp)"
  echo "${label[$t]}" >"$dir/label"

  kill_at=$(awk -v d="$duration" -v f="${down%-*}" 'BEGIN { printf "%.3f", d * f }')
  back_at=$(awk -v d="$duration" -v f="${down#*-}" 'BEGIN { printf "%.3f", d * f }')
  log "$t: ${duration} s of traffic at $rate requests/s; p1 down from ${kill_at} s to ${back_at} s"
  start "$t-load" "${on_load_cpu[@]}" timeout $((duration + timeout + 30)) "$load_bin" load \
    --url "$url" --target "$t" --records "$dir/records.tsv" --duration "${duration}s" \
    --rate "$rate" --seed "$seed" --timeout "${timeout}s" --tokens "$tokens" --stream-share "$stream_share"
  local load_pid=$started_pid busy_before
  busy_before=$(machine_ticks)
  sleep "$kill_at"
  # The time is taken before the signal: every request that p1's death cut short ended after it.
  printf '%s\tkill\tp1\n' "$(now_ms)" >>"$dir/events.tsv"
  stop "${sim_pid[p1]}" KILL
  sleep "$(awk -v a="$kill_at" -v b="$back_at" 'BEGIN { printf "%.3f", b - a }')"
  sim_start "$t" p1
  printf '%s\tstart\tp1\n' "$(now_ms)" >>"$dir/events.tsv"
  wait "$load_pid" || rc=$?
  busy[$t]=$(printf '%s %s\n' "$busy_before" "$(machine_ticks)" |
    awk '$4 > $2 { printf "%.0f", 100 * ($3 - $1) / ($4 - $2) }')
  load_line[$t]=$(grep '^CHAOS ' "$tmp/$t-load.log" || true)
  [ "$rc" = 0 ] && [ -n "${load_line[$t]}" ] || die "the load against $t failed (exit $rc; see $tmp/$t-load.log)"
  log "  ${load_line[$t]}"

  if [ "$t" = switchyard ]; then
    curl -s --noproxy '*' --max-time 5 "http://127.0.0.1:$admin_port/metrics" >"$dir/metrics.txt" || true
  fi
  [ "$t" = direct ] || stop "${proxy_pid[$t]}"
  for s in "${servers[@]}"; do stop "${sim_pid[$s]}"; done
}

started_at=$(date -u '+%Y-%m-%d %H:%M UTC')
for t in ${targets//,/ }; do run_target "$t"; done

# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------
"$load_bin" report --dir "$tmp" --targets "$targets" --svg "$tmp/chaos.svg" --out "$tmp/tables.md" \
  --title "Availability under chaos: $duration s per target, seed $seed" || die "the report failed"
report=$tmp/report.md
{
  echo "### Availability under chaos, $started_at"
  echo
  echo "Machine: $(nproc) CPUs, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(uname -sr)." \
    "Placement: $placement. Each target: ${duration} s of chat requests at $rate per second (Poisson" \
    "arrivals, the same requests at the same offsets for every target, $(awk -v s="$stream_share" 'BEGIN { printf "%.0f", s * 100 }') % streamed," \
    "$tokens tokens each), the client giving up after ${timeout} s. Four simulated model servers" \
    "(first token ${sim_ttft}, then one token per ${sim_token_delay}), each drawing faults from" \
    "\`$schedule\` (seed $seed; slow = first token after $slow);" \
    "p1 is killed (SIGKILL) at ${down%-*} and restarted at ${down#*-} of the run. Every balancer" \
    "runs one worker."
  echo
  echo "Command: \`$command_line\`. switchyard: \`$sy_bin\` ($sy_rev). Configs:" \
    "$(for t in nginx haproxy switchyard; do printf '`%s` ' "$(realpath --relative-to="$repo" "${config_of[$t]}")"; done | sed 's/ $//')"
  echo
  cat "$tmp/tables.md"
  echo
  printf 'CPU busy during each run (both CPUs, every process on the machine, ours and others'"'"'):'
  for t in ${targets//,/ }; do printf ' %s %s %%;' "$t" "${busy[$t]:-?}"; done | sed 's/;$/./'
  echo
} >"$report"
cat "$report"
[ -n "$out" ] && cp "$report" "$out"
[ -n "$chart" ] && cp "$tmp/chaos.svg" "$chart"

# ---------------------------------------------------------------------------------------------
# Verdict. Only silence fails the run: a target that answered no request correctly.
# ---------------------------------------------------------------------------------------------
failures=()
for t in ${targets//,/ }; do
  ok=$(printf '%s\n' "${load_line[$t]:-}" | tr ' ' '\n' | sed -n 's/^ok=//p')
  [ "${ok:-0}" -gt 0 ] || failures+=("$t: answered no request correctly")
done
if [ ${#failures[@]} -gt 0 ]; then
  for f in "${failures[@]}"; do log "FAIL $f"; done
  exit 1
fi
log "every target answered"
