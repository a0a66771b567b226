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

local leases = {}
for i = 3, #ARGV do
  leases[#leases + 1] = ARGV[i]
end
local reply = { 0 }
if #leases == 0 then
  record_metrics(KEYS[5], now_ms(ARGV[1]), 0, 0, ARGV[2])
  return reply
end

-- A constant number of calls per batch: look every lease up at once, then delete in bulk.
local held = redis.call('ZMSCORE', KEYS[2], unpack(leases))
local done, ids, seen = {}, {}, {}
for i, lease in ipairs(leases) do
  local id = lease_id(lease)
  if held[i] and not seen[lease] then
    seen[lease] = true
    done[#done + 1] = lease
    ids[#ids + 1] = id
  else
    reply[#reply + 1] = id
  end
end
if #done > 0 then
  redis.call('ZREM', KEYS[2], unpack(done))
  redis.call('HDEL', KEYS[1], unpack(ids))
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HDEL', KEYS[3], unpack(ids)) end
  redis.call('HINCRBY', KEYS[4], 'completed', #done)
  unpin_if_idle(KEYS[2])
end
record_metrics(KEYS[5], now_ms(ARGV[1]), #done, 0, ARGV[2])
reply[1] = #done
return reply
