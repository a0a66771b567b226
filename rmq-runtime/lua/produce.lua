-- produce.lua: store a batch of new messages and make each pending or delayed.
--
-- KEYS[1] m         hash  id -> envelope
-- KEYS[2..4] p0..p2 lists of ready ids, per priority
-- KEYS[5] delayed   zset  id by due time
-- KEYS[6] stats     hash  counters
-- KEYS[7] wake      (pub/sub channel name; passed as a key so its slot is known)
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2..] groups of 5: id, priority (0|1|2), delay_ms, ttl_ms (0 = none), body
--
-- Guarantees: a message whose id is already stored (in any state, dead included) is left
-- untouched and reported as a duplicate: producing with an explicit id is idempotent.
-- Within a priority, ready messages keep production order (LPUSH here, RPOP in fetch).
-- The envelope's timestamps come from this one clock.
-- Returns: one integer per message, 1 = stored, 0 = duplicate.

local k = { messages = KEYS[1], delayed = KEYS[5], stats = KEYS[6], wake = KEYS[7] }
local now = now_ms(ARGV[1])
local results = {}
local stored = 0
local woke = false

for i = 2, #ARGV, 5 do
  local id, prio = ARGV[i], tonumber(ARGV[i + 1])
  local delay, ttl = tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  -- TTL counts from the moment the message becomes ready, so a long delay cannot use it up.
  local expire = 0
  if ttl > 0 then expire = now + delay + ttl end
  if redis.call('HSETNX', k.messages, id, prio .. '|' .. now .. '|' .. expire .. '|' .. ARGV[i + 4]) == 1 then
    if delay > 0 then
      redis.call('ZADD', k.delayed, now + delay, id)
      if not woke then woke = wake_if_earliest(k.delayed, k.wake, id) end
    else
      if redis.call('LPUSH', KEYS[2 + prio], id) == 1 and not woke then
        redis.call('PUBLISH', k.wake, 'p')
        woke = true
      end
    end
    stored = stored + 1
    results[#results + 1] = 1
  else
    results[#results + 1] = 0
  end
end

if stored > 0 then redis.call('HINCRBY', k.stats, 'produced', stored) end
return results
