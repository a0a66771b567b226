-- ack.lua: complete a batch of leased messages in one round trip.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2] inflight   zset  lease "<id>|<token>|<attempt>" by lease deadline (and LEASE_PIN)
-- KEYS[3] errors     hash  id -> failure record
-- KEYS[4] stats      hash  counters
-- KEYS[5] metrics    hash  handler-time histogram and per-minute counts
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] handler timings of the consumer's settled attempts, "field:n ..." (see
--         record_metrics in lib.lua), or ""
-- ARGV[3..] leases, as fetch.lua returned them; at most 1000 (Lua's unpack limit is
--           about 8000 values)
--
-- Guarantees: a message is completed only by the holder of its current lease (see
-- lease_of in lib.lua); then nothing of it is left in Redis (a message in flight has no
-- `attempts` field: its attempt number is in the lease).
-- A lease given twice in one call is completed once (the second is reported stale).
-- A stale lease (it lapsed and the message was re-leased or dead-lettered) changes nothing.
-- Returns: { completed count, stale id, stale id, ... }

-- the leases are ARGV[3..]; counters instead of #t (Lua finds a table's length by binary
-- search), and no `seen` table unless a lease came twice (ZREM then removes fewer)
local first, n = 3, #ARGV - 2
local reply = { 0 }
if n == 0 then
  record_metrics(KEYS[5], now_ms(ARGV[1]), 0, 0, ARGV[2])
  return reply
end

-- A constant number of calls per batch: look every lease up at once, then delete in bulk.
local held = redis.call('ZMSCORE', KEYS[2], unpack(ARGV, first))
local function classify(seen)
  local done, ids, ndone, nreply = {}, {}, 0, 1
  for i = 1, n do
    local lease = ARGV[first + i - 1]
    if held[i] and not (seen and seen[lease]) then
      if seen then seen[lease] = true end
      ndone = ndone + 1
      done[ndone], ids[ndone] = lease, lease_id(lease)
    else
      nreply = nreply + 1
      reply[nreply] = lease_id(lease)
    end
  end
  return done, ids
end
local done, ids = classify(nil)
if #done > 0 and redis.call('ZREM', KEYS[2], unpack(done)) < #done then
  -- a lease given twice in this call: the first completes, the later ones are stale
  reply = { 0 }
  done, ids = classify({})
end
if #done > 0 then
  redis.call('HDEL', KEYS[1], unpack(ids))
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HDEL', KEYS[3], unpack(ids)) end
  redis.call('HINCRBY', KEYS[4], 'completed', fmt('%d', #done))
  unpin_if_idle(KEYS[2])
end
record_metrics(KEYS[5], now_ms(ARGV[1]), #done, 0, ARGV[2])
reply[1] = #done
return reply
