-- release.lua: give leased messages back without counting the attempt (shutdown).
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2..4] p0..p2  lists of ready ids, per priority
-- KEYS[5] inflight   zset  id by lease deadline
-- KEYS[6] attempts   hash  id -> deliveries so far
-- KEYS[7] wake       pub/sub channel
-- KEYS[8] leases     hash  id -> lease token, while in flight
-- ARGV[1] now (unused; every script takes the clock first)
-- ARGV[2..] pairs: id, lease token
--
-- Guarantees: a message whose handler was cancelled by a shutdown returns to the FRONT of
-- its priority level at once (several keep the order given: the first is next), as if
-- never fetched (its attempt count goes back down), so
-- another consumer picks it up first and it does not wait for its lease to lapse. Only the
-- holder of the current lease can release.
-- Returns: number released.

local k = { messages = KEYS[1], inflight = KEYS[5], attempts = KEYS[6], leases = KEYS[8] }
local released = 0
for i = #ARGV - 1, 2, -2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local envelope = redis.call('HGET', k.messages, id)
  if envelope and holds_lease(k, id, token) then
    unlease(k, id)
    if redis.call('HINCRBY', k.attempts, id, -1) <= 0 then
      redis.call('HDEL', k.attempts, id)
    end
    redis.call('RPUSH', KEYS[2 + priority_of(envelope)], id)
    released = released + 1
  end
end
if released > 0 then redis.call('PUBLISH', KEYS[7], 'p') end
return released
