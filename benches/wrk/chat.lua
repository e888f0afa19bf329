-- chat.lua: wrk script that POSTs one chat-completion request shaped like real traffic and, when
-- the run ends, prints one machine-readable line that run.sh parses:
--
--   BENCH requests=N duration_us=N rps=F p50_us=N p99_us=N p999_us=N non2xx=N connect=N read=N write=N timeout=N p75_us=N p90_us=N
--
-- The body is fixed (built once in init, so wrk sends a pre-built request and the load generator
-- stays cheap). A fixed prompt with "temperature":0 is also what the cached route needs to hit.
-- Set CHAT_PROMPT in the environment to change the prompt.
--
-- non2xx is wrk's "status" error count: responses with a status of 400 or more (wrk does not count
-- 3xx as errors; no target in this bench redirects).

local prompt = os.getenv("CHAT_PROMPT") or "Summarise the plot of Hamlet in one sentence."

function init(args)
   wrk.method = "POST"
   wrk.headers["content-type"] = "application/json"
   wrk.headers["accept"] = "application/json"
   wrk.body = string.format(
      '{"model":"bench-model","messages":[' ..
      '{"role":"system","content":"You are a concise assistant."},' ..
      '{"role":"user","content":"%s"}],' ..
      '"temperature":0,"max_tokens":64,"stream":false}', prompt)
end

function done(summary, latency, requests)
   local e = summary.errors
   local secs = summary.duration / 1e6
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.2f p50_us=%d p99_us=%d p999_us=%d " ..
      "non2xx=%d connect=%d read=%d write=%d timeout=%d p75_us=%d p90_us=%d\n",
      summary.requests, summary.duration, summary.requests / secs,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(75), latency:percentile(90)))
end
