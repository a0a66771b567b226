-- release.lua: give leased messages back without counting the attempt (shutdown).
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2..4] p0..p2  lists of ready ids, per priority
-- KEYS[5] inflight   zset  lease "<id>|<token>|<attempt>" by lease deadline (and LEASE_PIN)
-- KEYS[6] attempts   hash  id -> deliveries so far, while not in flight
-- KEYS[7] wake       pub/sub channel
-- ARGV[1] now (unused; every script takes the clock first)
-- ARGV[2..] leases, as fetch.lua returned them
--
-- Guarantees: a message whose handler was cancelled by a shutdown returns to the FRONT of
-- its priority level at once (several keep the order given: the first is next), as if
-- never fetched (its attempt count goes back down), so another consumer picks it up first
-- and it does not wait for its lease to lapse. Only the holder of the current lease can
-- release.
-- Returns: number released.

local released, unleased = 0, 0
for i = #ARGV, 2, -1 do
  local lease = ARGV[i]
  if redis.call('ZREM', KEYS[5], lease) == 1 then
    unleased = unleased + 1
    local id, attempt = parse_lease(lease)
    local envelope = redis.call('HGET', KEYS[1], id)
    if envelope then
      if attempt > 1 then redis.call('HSET', KEYS[6], id, attempt - 1) end
      redis.call('RPUSH', KEYS[2 + priority_of(envelope)], id)
      released = released + 1
    end
  end
end
if unleased > 0 then unpin_if_idle(KEYS[5]) end
if released > 0 then redis.call('PUBLISH', KEYS[7], 'p') end
return released
