-- ack.lua: complete a batch of leased messages in one round trip.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2] inflight   zset  id by lease deadline
-- KEYS[3] attempts   hash  id -> deliveries so far
-- KEYS[4] errors     hash  id -> failure record
-- KEYS[5] stats      hash  counters
-- KEYS[6] leases     hash  id -> lease token, while in flight
-- KEYS[7] metrics    hash  handler-time histogram and per-minute counts
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] handler timings of the consumer's settled attempts, "field:n ..." (see
--         record_metrics in lib.lua), or ""
-- ARGV[3..] pairs: id, lease token (as fetch.lua returned it); at most
--           1000 pairs (Lua's unpack limit is about 8000 values)
--
-- Guarantees: a message is completed only by the holder of its current lease (see
-- holds_lease in lib.lua); then nothing of it is left in Redis.
-- An id given twice in one call is completed once (the second is reported stale).
-- A stale token (the lease lapsed and the message was re-leased or dead-lettered)
-- changes nothing.
-- Returns: { completed count, stale id, stale id, ... }

local k = {
  messages = KEYS[1], inflight = KEYS[2], attempts = KEYS[3], errors = KEYS[4], leases = KEYS[6],
}
local ids, tokens = {}, {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  tokens[#ids] = ARGV[i + 1]
end
local reply = { 0 }
if #ids == 0 then
  record_metrics(KEYS[7], now_ms(ARGV[1]), 0, 0, ARGV[2])
  return reply
end

-- A constant number of calls per batch: read every lease at once, then delete in bulk.
local current = redis.call('HMGET', k.leases, unpack(ids))
local done, seen = {}, {}
for i, id in ipairs(ids) do
  if current[i] == tokens[i] and not seen[id] then
    seen[id] = true
    done[#done + 1] = id
  else
    reply[#reply + 1] = id
  end
end
if #done > 0 then
  redis.call('ZREM', k.inflight, unpack(done))
  redis.call('HDEL', k.leases, unpack(done))
  redis.call('HDEL', k.messages, unpack(done))
  redis.call('HDEL', k.attempts, unpack(done))
  redis.call('HDEL', k.errors, unpack(done))
  redis.call('HINCRBY', KEYS[5], 'completed', #done)
end
record_metrics(KEYS[7], now_ms(ARGV[1]), #done, 0, ARGV[2])
reply[1] = #done
return reply
