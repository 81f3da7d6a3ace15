-- Mixed load for scripts/soak.sh: 30% plan reads, 10% referral lists, 30% recommendations,
-- 20% session checks (writes), 10% referrals (writes that send a webhook).
-- RATE (requests/s over all threads; 0 = as fast as the connections go) paces the requests:
-- each request has a due time on a fixed schedule per thread, so the rate holds whatever the
-- latency, and a thread that falls behind does not burst to catch up.
-- Environment: TOKEN, PLAN_IDS (file, one plan id per line, line i is Patient/soak-i), RATE,
-- THREADS.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
int clock_gettime(int clock, soak_timespec *ts);
]]
local ts = ffi.new("soak_timespec")
local function now()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local token = os.getenv("TOKEN")
local rate = tonumber(os.getenv("RATE") or "0") or 0
local nthreads = tonumber(os.getenv("THREADS") or "2") or 2
local ids = {}
for line in io.lines(os.getenv("PLAN_IDS")) do
  ids[#ids + 1] = line
end
local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }

-- main state: collect the threads to read their counters in done()
local threads = {}
local seeds = 0
function setup(thread)
  seeds = seeds + 1
  thread:set("seed", seeds)
  table.insert(threads, thread)
end

-- thread state
bad = 0        -- responses other than 2xx
last_bad = ""  -- the last of them, for the report
local start, slot = nil, 0

function init(args)
  math.randomseed(os.time() * 100 + (seed or 0))
end

function delay()
  if rate <= 0 then
    return 0
  end
  local per_thread = rate / nthreads
  local t = now()
  if not start then
    start = t
  end
  local due = start + slot / per_thread
  slot = slot + 1
  if due < t - 1 then -- more than a second behind: restart the schedule from now
    slot = (t - start) * per_thread
    due = t
  end
  local ms = (due - t) * 1000
  if ms < 1 then
    return 0
  end
  return ms
end

function request()
  local i = math.random(#ids)
  local subject = "Patient/soak-" .. i
  local r = math.random(100)
  if r <= 30 then
    return wrk.format("GET", "/v1/plans/" .. ids[i], headers)
  elseif r <= 40 then
    return wrk.format("GET", "/v1/referrals?limit=20", headers)
  elseif r <= 70 then
    return wrk.format("POST", "/v1/recommendations", headers, string.format(
      '{"subject": "%s", "appointment_type": "therapy", "sensitive_topics": true}', subject))
  elseif r <= 90 then
    return wrk.format("POST", "/v1/session-checks", headers, string.format(
      '{"subject": "%s", "modality": "video", "appointment_type": "therapy", ' ..
      '"service_user_location": {"description": "home"}, "call_back_number": "+447700900123", ' ..
      '"clinician_in_private_space": true, "service_user_private": true, "sensitive_topics": false}',
      subject))
  else
    return wrk.format("POST", "/v1/referrals", headers, string.format(
      '{"subject": "%s", "reason": "not_preferred", "urgency": "routine"}', subject))
  end
end

function response(status, hdrs, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    last_bad = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  local bad_total, last = 0, ""
  for _, t in ipairs(threads) do
    bad_total = bad_total + (t:get("bad") or 0)
    local l = t:get("last_bad")
    if l and l ~= "" then
      last = l
    end
  end
  local e = summary.errors
  local socket = e.connect + e.read + e.write + e.timeout
  io.write(string.format(
    "SOAK requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f max_ms=%.2f non2xx=%d socket_errors=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    bad_total, socket))
  if last ~= "" then
    io.write("SOAK last_error=" .. string.gsub(last, "\n", " ") .. "\n")
  end
end
