-- fail.lua: settle failed attempts: retry later, dead-letter, or drop.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2] delayed    zset  id by due time
-- KEYS[3] inflight   zset  lease "<id>|<token>|<attempt>" by lease deadline (and LEASE_PIN)
-- KEYS[4] attempts   hash  id -> deliveries so far, while not in flight
-- KEYS[5] errors     hash  id -> "first_failed_ms|last_failed_ms|reason|last error"
-- KEYS[6] dead       zset  dead-lettered ids
-- KEYS[7] stats      hash  counters
-- KEYS[8] wake       pub/sub channel
-- KEYS[9] metrics    hash  handler-time histogram and per-minute counts
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] handler timings, "field:n ..." or "" (see ack.lua)
-- ARGV[3] max attempts (retries + 1) of this topic
-- ARGV[4] "1" to keep dead letters, "0" to drop them
-- ARGV[5] most dead letters kept (oldest evicted beyond)
-- ARGV[6..] groups of 5: lease (as fetch.lua returned it), action ("retry" | "dead" |
--           "drop"), retry delay (ms), dead-letter reason (for "dead"), error text
--
-- Guarantees: only the holder of the current lease settles a message (see ack.lua); the
-- attempt number comes from the lease and is kept in `attempts` while the message waits.
-- The handler's own error text is kept, with the first and last failure times.
-- "retry" re-schedules the message as delayed (it keeps its priority, which lives in the
-- envelope) while attempts < max attempts, and dead-letters it with reason "retries
-- exhausted" otherwise: `retries = N` allows N + 1 attempts. "dead" dead-letters now with
-- the given reason; "drop" deletes every trace now.
-- Returns: one code per message: 0 stale lease, 1 retried, 2 dead-lettered, 3 dropped
-- (also when it would be dead-lettered but dead letters are disabled).

-- a step of Lua's garbage collector in every settle call (see ack.lua)
collectgarbage('step', 0)

local k = {
  messages = KEYS[1], delayed = KEYS[2], inflight = KEYS[3], attempts = KEYS[4],
  errors = KEYS[5], dead = KEYS[6], stats = KEYS[7], wake = KEYS[8],
  keep_dead = ARGV[4], max_dead = tonumber(ARGV[5]),
}
local now = now_ms(ARGV[1])
local max_attempts = tonumber(ARGV[3])
local reply = {}
local failed = 0
local woke = false

for i = 6, #ARGV, 5 do
  local lease, action = ARGV[i], ARGV[i + 1]
  local reason, err = ARGV[i + 3], ARGV[i + 4]
  local code = 0
  if redis.call('ZREM', k.inflight, lease) == 1 then
    failed = failed + 1
    local id, attempts = parse_lease(lease)
    if action ~= 'drop' then redis.call('HSET', k.attempts, id, attempts) end
    if action == 'retry' and attempts < max_attempts then
      record_failure(k, id, now, '', err)
      redis.call('ZADD', k.delayed, due_in(tonumber(ARGV[i + 2])), id)
      redis.call('HINCRBY', k.stats, 'retried', '1')
      if not woke then woke = wake_if_earliest(k.delayed, k.wake, id) end
      code = 1
    elseif action == 'drop' then
      forget(k, id)
      redis.call('HINCRBY', k.stats, 'dropped', '1')
      code = 3
    else
      if action == 'retry' then reason = 'retries exhausted' end
      record_failure(k, id, now, reason, err)
      if dead_letter(k, id, now) then code = 2 else code = 3 end
    end
  end
  reply[#reply + 1] = code
end
if failed > 0 then
  redis.call('HINCRBY', k.stats, 'failed', fmt('%d', failed))
  unpin_if_idle(k.inflight)
end
record_metrics(KEYS[9], now, 0, failed, ARGV[2])
return reply
