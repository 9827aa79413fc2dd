-- wrk script of `nurtured bench --single`: single-event intake, as a website script or
-- a server-side SDK without batching sends it. Each request posts one page view of the
-- pricing page to /v1/page for one of the leads the bench identified beforehand
-- (lead<N>@bench<N % 97>.example.com, N below the lead count), with a fresh messageId.
--
--   wrk -t2 -c50 -d10s --latency -s bench/single.lua http://127.0.0.1:PORT \
--       -- TOKEN LEADS RUN_TAG
--
-- done() prints one line for the bench to read:
--   nurtured-wrk requests=N duration_us=N status_errors=N socket_errors=N
--                latency_us mean=N p50=N p90=N p99=N max=N

local threads = 0

function setup(thread)
   threads = threads + 1
   thread:set("thread_no", threads)
end

local leads, tag, sent = 1, "run", 0

function init(args)
   wrk.method = "POST"
   wrk.headers["Authorization"] = "Bearer " .. args[1]
   wrk.headers["Content-Type"] = "application/json"
   leads = tonumber(args[2])
   tag = args[3]
end

function request()
   sent = sent + 1
   -- Each thread goes round all leads, from its own starting point.
   local lead = (sent + thread_no * 7919) % leads
   local body = string.format(
      '{"userId":"lead%d@bench%d.example.com","messageId":"%s-%d-%d",' ..
      '"name":"Pricing","properties":{"url":"https://example.com/pricing"}}',
      lead, lead % 97, tag, thread_no, sent)
   return wrk.format(nil, "/v1/page", nil, body)
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "nurtured-wrk requests=%d duration_us=%d status_errors=%d socket_errors=%d " ..
      "latency_us mean=%.0f p50=%d p90=%d p99=%d max=%d\n",
      summary.requests, summary.duration, e.status,
      e.connect + e.read + e.write + e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
