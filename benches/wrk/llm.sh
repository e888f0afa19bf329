# benches/wrk/llm.sh: the LLM-traffic rows of benches/wrk/run.sh, sourced by it (not run alone).
#
#   streams  N concurrent SSE streams through direct (the simulator), nginx, HAProxy, switchyard
#            in front of one `switchyard sim`: proxy CPU per stream, peak RSS, stream p50/p99
#   c1       wrk -t1 -c1 rounds interleaved across direct (the stand-in backend), nginx, HAProxy,
#            switchyard: p50/p90 and what each proxy adds over direct, with the per-round spread
#   conns    per proxy: 10,000 idle keep-alive connections (RSS per idle connection, all still
#            usable after the hold), then 5,000 concurrent streams held to completion
#
# It uses run.sh's helpers and state (start, stop, free_port, cpu_ticks, run_wrk, pid_of, port,
# note, ...). The proxies of the streams and conns rows are separate instances from the wrk rows':
# they front the simulator, and are configured for streaming. Method: benches/README.md.

llm_wanted() { want streams || want c1 || want conns; }

# Per-target results the report and the verdict share.
declare -A sse_hwm s_ok s_err c1_ran c1_reqs c1_errs c_ok c_err c_idle

# Client connections a proxy must accept at once in the conns row, with room for probes.
llm_maxconn() {
  local n=$idle_conns
  [ "$conn_streams" -gt "$n" ] && n=$conn_streams
  echo $((n + 100))
}
# The file descriptors the conns row needs in one process. HAProxy sets the bar: it refuses to
# start unless the limit covers two per connection of its maxconn (a client and a server side)
# plus a few, whether or not the server side is used.
llm_fd_need() { echo $((2 * $(llm_maxconn) + 256)); }

# Raise the open-files limit of this shell (inherited by every process it starts) as far as the
# hard limit allows; fail with a clear message if that is not enough for the conns row.
llm_raise_nofile() {
  local need hard
  need=$(llm_fd_need)
  ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  fd_limit=$(ulimit -n)
  [ "$fd_limit" = unlimited ] && fd_limit=1048576
  if [ "$fd_limit" -lt "$need" ]; then
    hard=$(ulimit -Hn)
    die "the conns row needs $need open files per process (--idle-conns $idle_conns, --conn-streams $conn_streams), but ulimit -n could only be raised to $fd_limit (hard limit $hard). Raise the hard limit (as root: ulimit -Hn 1048576, or LimitNOFILE= / limits.conf) or pass smaller --idle-conns/--conn-streams."
  fi
  log "open files limit: $fd_limit (hard $(ulimit -Hn); the conns row needs $need)"
}

# ---------------------------------------------------------------------------------------------
# The proxies in front of the simulator, configured for streaming. Sized for the conns row:
# every limit on connections sits above --idle-conns and twice --conn-streams (a stream through a
# proxy is two connections in nginx's count).
# ---------------------------------------------------------------------------------------------
llm_configs() {
  local wc=$((2 * $(llm_maxconn) + 1024)) maxconn
  maxconn=$(llm_maxconn)
  mkdir -p "$tmp/sse_nginx"
  cat >"$tmp/sse_nginx/nginx.conf" <<EOF
# nginx in front of the model simulator, configured for SSE streams as an operator would.
worker_processes 1;
# Sized for the many-connections row: $idle_conns idle client connections, or $conn_streams
# streams (each a client and an upstream connection), plus room. nginx cannot raise its own
# limit beyond the hard limit of the shell that starts it (here $fd_limit).
worker_rlimit_nofile $fd_limit;
daemon off;
pid $tmp/sse_nginx/nginx.pid;
error_log $tmp/sse_nginx/error.log warn;
events { worker_connections $wc; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $tmp/sse_nginx/client_body;
    proxy_temp_path $tmp/sse_nginx/proxy;

    upstream sim {
        server 127.0.0.1:$sim_port;
        # As many idle upstream connections as switchyard keeps per peer (256).
        keepalive 256;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:${port[sse_nginx]} reuseport backlog=65535;
        location /v1/ {
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # Streaming: each event goes to the client as it arrives, not when a buffer fills.
            proxy_buffering off;
            proxy_request_buffering on;
            # 5 s, not 1 s: a connection the simulator's full accept queue dropped is retried
            # by the kernel after 1 s; that costs the stream a second, not its answer.
            proxy_connect_timeout 5s;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
            proxy_next_upstream error timeout http_502 http_503 http_504 non_idempotent;
            proxy_next_upstream_tries 2;
        }
    }
}
EOF
  cat >"$tmp/sse_haproxy.cfg" <<EOF
# HAProxy in front of the model simulator, configured for SSE streams as an operator would.
global
    nbthread 1
    # Sized for the many-connections row ($idle_conns idle client connections or $conn_streams
    # streams, plus room). HAProxy raises its own open-files limit to about twice this and
    # refuses to start if the hard limit (here $fd_limit) is lower.
    maxconn $maxconn
defaults
    mode http
    maxconn $maxconn
    option http-keep-alive
    # Requests are forwarded as they arrive (no option http-buffer-request); small chunks of an
    # event stream are sent at once, not held back to fill packets.
    option http-no-delay
    http-reuse always
    # 5 s, not 1 s: a connection the simulator's full accept queue dropped is retried by the
    # kernel after 1 s; that costs the stream a second, not its answer.
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 60s
    retries 1
    retry-on conn-failure empty-response response-timeout 502 503 504
    option redispatch 1
frontend edge
    bind 127.0.0.1:${port[sse_haproxy]} backlog 65535
    http-request return status 404 unless { path_beg /v1/ }
    default_backend sim
backend sim
    server s1 127.0.0.1:$sim_port
EOF
  haproxy -c -q -f "$tmp/sse_haproxy.cfg" 2>"$tmp/sse_haproxy-check.log" ||
    die "haproxy rejected $tmp/sse_haproxy.cfg ($(head -c 300 "$tmp/sse_haproxy-check.log"))"
  sy_config sse_switchyard "${port[sse_switchyard]}" "${port[sse_switchyard_admin]}" "" "  sim:
    peers:
      - { addr: \"127.0.0.1:$sim_port\" }" "      - { cluster: sim, weight: 100 }"
  # connect 5 s, as nginx and HAProxy here (see their configs).
  sed -i 's/timeouts: { connect: 1s,/timeouts: { connect: 5s,/' "$tmp/sse_switchyard.yaml"
  grep -q 'connect: 5s' "$tmp/sse_switchyard.yaml" || die "could not set the connect timeout in $tmp/sse_switchyard.yaml"
  cat >>"$tmp/sse_switchyard.yaml" <<EOF
# Sized for the many-connections row: $idle_conns idle client connections, or $conn_streams
# streams in flight, plus room (the defaults are 10000 and 4096).
limits:
  max_connections: $((maxconn + 1024))
  max_concurrent_requests: $((maxconn + 1024))
EOF
}

# llm_start T: (re)start the proxy T (sse_nginx, sse_haproxy, sse_switchyard) fresh; wait until
# a streamed request goes through. Sets pid_of[T]; on failure sets note[T] and returns 1.
llm_start() {
  local t=$1
  [ -n "${pid_of[$t]:-}" ] && stop "${pid_of[$t]}"
  unset "note[$t]"
  case "$t" in
    sse_nginx) start "$t" "${on_proxy_cpu[@]}" nginx -e "$tmp/sse_nginx/error.log" -p "$tmp/sse_nginx" \
      -c "$tmp/sse_nginx/nginx.conf" ;;
    sse_haproxy) start "$t" "${on_proxy_cpu[@]}" haproxy -db -f "$tmp/sse_haproxy.cfg" ;;
    sse_switchyard) start "$t" "${on_proxy_cpu[@]}" "$sy_bin" -c "$tmp/sse_switchyard.yaml" ;;
  esac
  pid_of[$t]=$started_pid
  if ! wait_ok "http://127.0.0.1:${port[$t]}$chat_path" "$ready_timeout" "${sim_post[@]}"; then
    note[$t]="failed: did not answer within ${ready_timeout}s (log: $tmp/$t.log)"
    log "$t $(tail -n 3 "$tmp/$t.log" | tr '\n' ' ')"
    return 1
  fi
}

llm_setup() {
  llm_wanted || return 0
  fd_limit=${fd_limit:-$(ulimit -n)}
  want streams || want conns || return 0
  if [ -n "$sy_problem" ]; then
    llm_problem="failed: $sy_problem (the simulator is switchyard's)"
    return 0
  fi
  if [ -n "$streams_problem" ]; then
    llm_problem="failed: $streams_problem"
    return 0
  fi
  sim_port=$(free_port)
  sim_body=${body/'"stream":false'/'"stream":true'}
  sim_post=(-X POST -H 'content-type: application/json' -H 'x-sim-tokens: 2' -H 'x-sim-ttft-ms: 0'
    --data-binary "$sim_body")
  start sse_direct "${on_load_cpu[@]}" "$sy_bin" sim --listen "127.0.0.1:$sim_port" --name sim-streams
  pid_of[sse_direct]=$started_pid
  port[sse_direct]=$sim_port
  if ! wait_ok "http://127.0.0.1:$sim_port$chat_path" 10 "${sim_post[@]}"; then
    llm_problem="failed: the simulator did not start (log: $tmp/sse_direct.log)"
    return 0
  fi
  port[sse_nginx]=$(free_port) port[sse_haproxy]=$(free_port)
  port[sse_switchyard]=$(free_port) port[sse_switchyard_admin]=$(free_port)
  llm_configs
  local t
  for t in sse_nginx sse_haproxy sse_switchyard; do
    llm_start "$t" && log "$t on port ${port[$t]} (in front of the simulator on $sim_port)"
  done
}

# ---------------------------------------------------------------------------------------------
# The streams row.
# ---------------------------------------------------------------------------------------------
# Connections the kernel dropped because a listener's accept queue was full (TcpExtListenOverflows,
# the whole machine): a simulator or proxy that did not accept fast enough. Each such drop costs a
# SYN retransmit (1 s), more than the proxies' 1 s connect timeout.
listen_overflows() {
  awk '$1 == "TcpExt:" { if (!h) { for (i = 2; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else { print $c + 0; exit } }' \
    /proc/net/netstat 2>/dev/null || echo 0
}

# run_streams TARGET N TOKENS OUTFILE [extra client args]: the streams client against TARGET; appends
# the target's CPU ticks during the run and the other work on the machine (as run_wrk does).
run_streams() {
  local t=$1 n=$2 tokens=$3 f=$4 before sim_before machine_before client_cpu wall ticks sim_ticks
  local overflows_before
  shift 4
  local TIMEFORMAT='%R %U %S'
  overflows_before=$(listen_overflows)
  before=$(cpu_ticks "${pid_of[$t]}")
  sim_before=$(cpu_ticks "${pid_of[sse_direct]}")
  machine_before=$(machine_ticks)
  { time timeout 300 "${on_load_cpu[@]}" "$streams_bin" --url "http://127.0.0.1:${port[$t]}$chat_path" \
    --streams "$n" --tokens "$tokens" --token-delay-ms "$token_delay_ms" --ttft-ms "$stream_ttft_ms" \
    --ramp-ms "$ramp_ms" "$@" >"$f" 2>&1 ; } 2>"$f.time" || log "streams client against $t exited with an error (see $f)"
  ticks=$(($(cpu_ticks "${pid_of[$t]}") - before))
  sim_ticks=$(($(cpu_ticks "${pid_of[sse_direct]}") - sim_before))
  [ "$t" = sse_direct ] && sim_ticks=0
  client_cpu=$(awk -v hz="$clk_tck" 'NF == 3 { printf "%d", ($2 + $3) * hz }' "$f.time")
  wall=$(awk 'NF == 3 { print $1 }' "$f.time")
  echo "CPU ticks=$ticks" >>"$f"
  echo "OVERFLOWS n=$(($(listen_overflows) - overflows_before))" >>"$f"
  awk -v all=$(($(machine_ticks) - machine_before - ticks - sim_ticks - ${client_cpu:-0})) \
    -v hz="$clk_tck" -v secs="${wall:-1}" 'BEGIN { o = 100 * all / hz / secs; printf "OTHERS busy=%.1f\n", o < 0 ? 0 : o }' >>"$f"
}

llm_streams_row() {
  want streams && [ -z "$llm_problem" ] || return 0
  local r t
  mkdir -p "$tmp/streams"
  for r in $(seq 1 "$repeat"); do
    for t in sse_direct sse_nginx sse_haproxy sse_switchyard; do
      [ -z "${note[$t]:-}" ] || continue
      log "streams round $r: $t ($stream_count streams x $stream_tokens tokens)"
      run_streams "$t" "$stream_count" "$stream_tokens" "$tmp/streams/$t.$r.txt"
    done
  done
  for t in sse_direct sse_nginx sse_haproxy sse_switchyard; do
    [ -z "${note[$t]:-}" ] && sse_hwm[$t]=$(peak_rss_kb "${pid_of[$t]}")
  done
}

# ---------------------------------------------------------------------------------------------
# The concurrency-1 row: wrk -t1 -c1 rounds against the wrk rows' targets, interleaved.
# ---------------------------------------------------------------------------------------------
llm_c1_row() {
  want c1 || return 0
  local r t
  mkdir -p "$tmp/c1"
  for r in $(seq 1 "$c1_rounds"); do
    for t in direct nginx haproxy switchyard; do
      runnable "$t" || continue
      c1_ran[$t]=1
      log "c1 round $r: $t (${c1_duration} s, 1 connection)"
      connections=1 wrk_threads=1 run_wrk "$t" "$c1_duration" "$tmp/c1/$t.$r.txt"
    done
  done
}

# ---------------------------------------------------------------------------------------------
# The many-connections row: per proxy, started fresh, the idle check and then the big streams run.
# ---------------------------------------------------------------------------------------------
llm_conns_row() {
  want conns && [ -z "$llm_problem" ] || return 0
  # Not `pids`: that is lib.sh's list of what to kill on exit, which `start` appends to, and a
  # local of that name would hide the restarted proxies from it.
  local t rss_pids
  mkdir -p "$tmp/conns"
  for t in sse_nginx sse_haproxy sse_switchyard; do
    if ! llm_start "$t"; then
      continue
    fi
    sleep 1
    rss_pids=$(echo "${pid_of[$t]}" $(cat /proc/"${pid_of[$t]}"/task/*/children 2>/dev/null) | tr ' ' ',')
    log "conns: $t, $idle_conns idle connections held ${idle_hold} s"
    timeout $((idle_hold + 300)) "${on_load_cpu[@]}" "$streams_bin" \
      --url "http://127.0.0.1:${port[$t]}$chat_path" --idle "$idle_conns" --hold-secs "$idle_hold" \
      --tokens 2 --ttft-ms 0 --token-delay-ms 0 --ramp-ms "$idle_ramp_ms" --rss-pids "$rss_pids" \
      >"$tmp/conns/$t.idle.txt" 2>&1 || log "idle client against $t exited with an error (see $tmp/conns/$t.idle.txt)"
    log "conns: $t, $conn_streams concurrent streams x $conn_stream_tokens tokens, ${conn_token_delay_ms} ms apart"
    run_streams "$t" "$conn_streams" "$conn_stream_tokens" "$tmp/conns/$t.streams.txt" \
      --ramp-ms "$conn_ramp_ms" --token-delay-ms "$conn_token_delay_ms"
  done
}

# ---------------------------------------------------------------------------------------------
# Report and verdict.
# ---------------------------------------------------------------------------------------------
llm_label() {
  case "$1" in
    sse_direct) echo "direct (the simulator)" ;;
    sse_nginx|nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*/||')" ;;
    sse_haproxy|haproxy) echo "haproxy $(haproxy -v 2>/dev/null | awk 'NR == 1 { print $3 }')" ;;
    sse_switchyard|switchyard) echo "switchyard ($sy_rev)" ;;
    direct) echo "direct (the stand-in backend)" ;;
  esac
}
# A signed duration in µs: "-40 µs", "1.20 ms".
fmt_sus() { awk -v u="$1" 'BEGIN { a = u < 0 ? -u : u; if (u == "") print "-"; else if (a < 1000) printf "%d µs", u; else printf "%.2f ms", u / 1000 }'; }
# How much A exceeds B, in percent of B: "+1.3%".
pct_over() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%+.1f%%", 100 * (a - b) / b }'; }
fmt_kib() { awk -v k="$1" 'BEGIN { if (k == "") print "-"; else printf "%.1f MiB", k / 1024 }'; }
fmt_bytes() { awk -v b="$1" 'BEGIN { if (b == "") print "-"; else if (b < 10240) printf "%d B", b; else printf "%.1f KiB", b / 1024 }'; }

# llm_streams_stats FILES...: "ok errors ticks p50 p99 others overflows peak" over the runs (sums
# of ok, errors, ticks and accept-queue overflows; medians of p50 and p99; the most "others" and
# the most streams open at once).
llm_streams_stats() {
  local f l ok=0 err=0 ticks=0 p50s="" p99s="" oth=0 o k ovf=0 peak=0 v
  for f in "$@"; do
    [ -f "$f" ] || continue
    l=$(grep '^STREAMS ' "$f" || true)
    if [ -z "$l" ]; then
      err=$((err + 1))
      continue
    fi
    ok=$((ok + $(kv "$l" ok))) err=$((err + $(kv "$l" errors)))
    k=$(sed -n 's/^CPU ticks=//p' "$f")
    ticks=$((ticks + ${k:-0}))
    [ "$(kv "$l" ok)" -gt 0 ] && p50s="$p50s $(kv "$l" p50_us)" p99s="$p99s $(kv "$l" p99_us)"
    o=$(sed -n 's/^OTHERS busy=//p' "$f")
    oth=$(awk -v a="$oth" -v b="${o:-0}" 'BEGIN { print (b > a) ? b : a }')
    v=$(sed -n 's/^OVERFLOWS n=//p' "$f")
    ovf=$((ovf + ${v:-0}))
    v=$(kv "$l" peak_open)
    [ "${v:-0}" -gt "$peak" ] && peak=$v
  done
  echo "$ok $err $ticks $(printf '%s\n' $p50s | median) $(printf '%s\n' $p99s | median) $oth $ovf $peak"
}

llm_report() {
  local t s ok err ticks p50 p99 oth cpu_us d99 n_us n_rss line
  if want streams; then
    echo
    echo "**Streams**: $stream_count concurrent SSE streams per run ($stream_tokens tokens, ${token_delay_ms} ms apart," \
      "first after ${stream_ttft_ms} ms), all started within ${ramp_ms} ms, each on its own connection;" \
      "$repeat run(s) per target, interleaved, all in front of one \`switchyard sim\` on the load CPU." \
      "CPU per stream: utime+stime (/proc/PID/stat, all processes and threads of the proxy) summed over the runs," \
      "divided by the streams completed (ticks of 1/$clk_tck s). Peak RSS: VmHWM summed over the proxy's" \
      "processes (nginx master + worker; HAProxy and switchyard are one process), over all runs. Stream" \
      "latency: writing the request to reading \`data: [DONE]\`, medians over runs of each run's p50/p99." \
      "Errors: streams without \`[DONE]\`, with another token count, an error event or a status other than 200." \
      "most open: streams open at once, at the most. accept overflows: connections the kernel dropped on a" \
      "full accept queue during the runs (TcpExtListenOverflows, the whole machine), each a 1 s SYN retry." \
      "On the direct row CPU and RSS are the simulator's."
    echo
    if [ -n "$llm_problem" ]; then
      echo "| streams | $llm_problem |"
      echo "|---|---|"
    else
      echo "| target | streams ok | errors | most open | CPU per stream | vs nginx | peak RSS | vs nginx | stream p50 | stream p99 | p99 vs direct | accept overflows | others |"
      echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      declare -A s_cpu s_p99
      for t in sse_direct sse_nginx sse_haproxy sse_switchyard; do
        if [ -n "${note[$t]:-}" ]; then
          echo "| $(llm_label "$t") | ${note[$t]} | | | | | | | | | | | |"
          continue
        fi
        read -r ok err ticks p50 p99 oth ovf peak <<<"$(llm_streams_stats "$tmp"/streams/"$t".[0-9]*.txt)"
        s_err[$t]=$err s_ok[$t]=$ok
        cpu_us=""
        [ "$ok" -gt 0 ] && cpu_us=$(awk -v k="$ticks" -v hz="$clk_tck" -v n="$ok" 'BEGIN { printf "%.0f", k / hz * 1e6 / n }')
        s_cpu[$t]=$cpu_us s_p99[$t]=$p99
      done
      for t in sse_direct sse_nginx sse_haproxy sse_switchyard; do
        [ -z "${note[$t]:-}" ] || continue
        read -r ok err ticks p50 p99 oth ovf peak <<<"$(llm_streams_stats "$tmp"/streams/"$t".[0-9]*.txt)"
        echo "| $(llm_label "$t") | $(fmt_int "$ok") | $err | $(fmt_int "$peak") | $(fmt_us "${s_cpu[$t]}") |" \
          "$(ratio "${s_cpu[$t]}" "${s_cpu[sse_nginx]:-}") | $(fmt_kib "${sse_hwm[$t]:-}") |" \
          "$(ratio "${sse_hwm[$t]:-}" "${sse_hwm[sse_nginx]:-}") | $(fmt_us "$p50") | $(fmt_us "$p99") |" \
          "$(pct_over "$p99" "${s_p99[sse_direct]:-}") | $ovf | $(pct "$oth") |"
      done
    fi
  fi
  if want c1; then
    llm_c1_report
  fi
  if want conns; then
    llm_conns_report
  fi
}

# One wrk field of target T in round R of the c1 row.
c1_field() { kv "$(grep '^BENCH ' "$tmp/c1/$1.$2.txt" 2>/dev/null || true)" "$3"; }

llm_c1_report() {
  local t r q d v added50 added90 spread50 spread90
  echo
  echo "**Concurrency 1**: \`wrk -t1 -c1 -d${c1_duration}s --latency\`, the same POST as above, $c1_rounds" \
    "round(s) per target interleaved (direct, nginx, HAProxy, switchyard, then again). p50/p90: medians over" \
    "the rounds. added: the target's median minus direct's; spread: the lowest and highest of the" \
    "per-round added values (target's round minus direct's same round). A difference between two" \
    "proxies smaller than their spreads is noise."
  echo
  echo "| target | requests | errors | p50 | p90 | added p50 | spread | added p90 | spread | others |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  declare -A med
  for t in direct nginx haproxy switchyard; do
    # (notes the wrk rows' report adds later, such as disturbed rounds, are not about this row)
    if [ -z "${c1_ran[$t]:-}" ]; then
      echo "| $(llm_label "$t") | ${note[$t]:-not run} | | | | | | | | |"
      continue
    fi
    for q in p50_us p90_us; do
      med[$t.$q]=$(for r in $(seq 1 "$c1_rounds"); do c1_field "$t" "$r" "$q"; done | median)
    done
    c1_reqs[$t]=$(for r in $(seq 1 "$c1_rounds"); do c1_field "$t" "$r" requests; done | awk '{ s += $1 } END { print s + 0 }')
    c1_errs[$t]=$(for r in $(seq 1 "$c1_rounds"); do
      l=$(grep '^BENCH ' "$tmp/c1/$t.$r.txt" 2>/dev/null || true)
      [ -n "$l" ] && echo $(($(kv "$l" non2xx) + $(kv "$l" connect) + $(kv "$l" read) + $(kv "$l" write) + $(kv "$l" timeout)))
    done | awk '{ s += $1 } END { print s + 0 }')
    oth=$(cat "$tmp"/c1/"$t".[0-9]*.txt 2>/dev/null | sed -n 's/^OTHERS busy=//p' | sort -g | tail -n 1)
    if [ "$t" = direct ]; then
      added50="-" added90="-" spread50="" spread90=""
    else
      added50=$(fmt_sus "$(awk -v a="${med[$t.p50_us]}" -v b="${med[direct.p50_us]:-}" 'BEGIN { if (a != "" && b != "") print a - b }')")
      added90=$(fmt_sus "$(awk -v a="${med[$t.p90_us]}" -v b="${med[direct.p90_us]:-}" 'BEGIN { if (a != "" && b != "") print a - b }')")
      for q in p50_us p90_us; do
        v=$(for r in $(seq 1 "$c1_rounds"); do
          d=$(c1_field direct "$r" "$q") x=$(c1_field "$t" "$r" "$q")
          [ -n "$d" ] && [ -n "$x" ] && echo $((x - d))
        done | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%s %s", lo, hi }')
        v=$(set -- $v; [ $# -eq 2 ] && echo "$(fmt_sus "$1") to $(fmt_sus "$2")" || echo "-")
        [ "$q" = p50_us ] && spread50=$v || spread90=$v
      done
    fi
    echo "| $(llm_label "$t") | $(fmt_int "${c1_reqs[$t]}") | ${c1_errs[$t]} | $(fmt_us "${med[$t.p50_us]}") |" \
      "$(fmt_us "${med[$t.p90_us]}") | $added50 | ${spread50:--} | $added90 | ${spread90:--} | $(pct "$oth") |"
  done
}

llm_conns_report() {
  local t l s ok err ticks p50 p99 oth
  echo
  echo "**Many connections**: per proxy, started fresh: $(fmt_int "$idle_conns") keep-alive connections opened" \
    "within ${idle_ramp_ms} ms (at most 200 first requests in flight at once), one request on each, all" \
    "left idle ${idle_hold} s, then a second request on each (\"still usable\"). RSS: VmRSS summed over the" \
    "proxy's processes, before the first connection and in the middle of the hold; per idle connection:" \
    "the difference over the connections opened. Then $(fmt_int "$conn_streams") concurrent streams" \
    "($conn_stream_tokens tokens, ${conn_token_delay_ms} ms apart, all started within ${conn_ramp_ms} ms, so that" \
    "all are open at once without overrunning the simulator's accept queue) on the same instance," \
    "held to completion. most open: streams open at once, at the most. accept overflows: connections" \
    "the kernel dropped on a full accept queue during the runs (TcpExtListenOverflows), each a 1 s SYN retry."
  echo
  echo "| proxy | opened | still usable | errors | RSS before | RSS with them | RSS per idle connection | streams ok | stream errors | most open | stream p50 | stream p99 | accept overflows |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for t in sse_nginx sse_haproxy sse_switchyard; do
    if [ -n "$llm_problem" ] || [ -n "${note[$t]:-}" ]; then
      echo "| $(llm_label "$t") | ${llm_problem:-${note[$t]}} | | | | | | | | | | | |"
      continue
    fi
    l=$(grep '^CONNS ' "$tmp/conns/$t.idle.txt" 2>/dev/null || true)
    read -r ok err ticks p50 p99 oth ovf peak <<<"$(llm_streams_stats "$tmp/conns/$t.streams.txt")"
    c_ok[$t]=$ok c_err[$t]=$err
    if [ -z "$l" ]; then
      c_idle[$t]="the idle client printed no result (see $tmp/conns/$t.idle.txt)"
      echo "| $(llm_label "$t") | ${c_idle[$t]} | | | | | | $(fmt_int "$ok") | $err | $(fmt_int "$peak") | $(fmt_us "$p50") | $(fmt_us "$p99") | $ovf |"
      continue
    fi
    c_idle[$t]=$l
    echo "| $(llm_label "$t") | $(fmt_int "$(kv "$l" opened)") | $(fmt_int "$(kv "$l" reused)") | $(kv "$l" errors) |" \
      "$(fmt_kib "$(kv "$l" rss_before_kb)") | $(fmt_kib "$(kv "$l" rss_idle_kb)") |" \
      "$(fmt_bytes "$(kv "$l" rss_per_conn_b)") | $(fmt_int "$ok") | $err | $(fmt_int "$peak") | $(fmt_us "$p50") | $(fmt_us "$p99") | $ovf |"
  done
}

# Appends to the failures array: errors, or no answers, in any of the new rows.
llm_verdict() {
  local t l
  if llm_wanted && [ -n "$llm_problem" ] && { want streams || want conns; }; then
    failures+=("streams/conns: ${llm_problem#failed: }")
  fi
  if want streams && [ -z "$llm_problem" ]; then
    for t in sse_direct sse_nginx sse_haproxy sse_switchyard; do
      if [ -n "${note[$t]:-}" ]; then failures+=("streams $t: ${note[$t]#failed: }")
      elif [ "${s_ok[$t]:-0}" -eq 0 ]; then failures+=("streams $t: no stream completed")
      elif [ "${s_err[$t]:-0}" -ne 0 ]; then failures+=("streams $t: ${s_err[$t]} errors"); fi
    done
  fi
  if want c1; then
    for t in direct nginx haproxy switchyard; do
      if [ -z "${c1_ran[$t]:-}" ]; then failures+=("c1 $t: ${note[$t]:-not running}")
      elif [ "${c1_reqs[$t]:-0}" -eq 0 ]; then failures+=("c1 $t: answered no requests")
      elif [ "${c1_errs[$t]:-0}" -ne 0 ]; then failures+=("c1 $t: ${c1_errs[$t]} errors"); fi
    done
  fi
  if want conns && [ -z "$llm_problem" ]; then
    for t in sse_nginx sse_haproxy sse_switchyard; do
      [ -n "${note[$t]:-}" ] && { failures+=("conns $t: ${note[$t]#failed: }"); continue; }
      l=${c_idle[$t]:-}
      case "$l" in
        CONNS*) [ "$(kv "$l" errors)" = 0 ] && [ "$(kv "$l" reused)" = "$idle_conns" ] ||
          failures+=("conns $t: $(kv "$l" errors) errors, $(kv "$l" reused) of $idle_conns idle connections still usable") ;;
        *) failures+=("conns $t: ${l:-no idle result}") ;;
      esac
      [ "${c_ok[$t]:-0}" -eq "$conn_streams" ] && [ "${c_err[$t]:-0}" -eq 0 ] ||
        failures+=("conns $t: ${c_ok[$t]:-0} of $conn_streams streams completed, ${c_err[$t]:-?} errors")
    done
  fi
}
