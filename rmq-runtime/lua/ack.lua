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
-- ARGV[3..] the leases, as fetch.lua returned them, then the id of each, in the same
--           order (the client has read them: parsing a lease here cost Redis 3,500
--           instructions, callgrind); at most 1000 leases (Lua's unpack limit is about 8000
--           values)
--
-- Guarantees: a message is completed only by the holder of its current lease (see
-- lease_of in lib.lua); then nothing of it is left in Redis (a message in flight has no
-- `attempts` field: its attempt number is in the lease).
-- A lease given twice in one call is completed once (the second is reported stale).
-- A stale lease (it lapsed and the message was re-leased or dead-lettered) changes nothing,
-- and so does a lease sent with an id that does not begin it.
-- Returns: { completed count, stale id, stale id, ... }

-- One small step of Lua's garbage collector (about 2 KB of its work; the least
-- `collectgarbage` does), in the consumer's settle call, off the path a new message takes.
-- Redis itself runs the collector inside every 50th script call, whatever the script
-- (`lua_gc(LUA_GCSTEP, 50)`, Redis 6.2-7.x), and that step finished a whole cycle when
-- nothing had stepped since the last one: 2 % of produce calls took 100-250 µs more, and a
-- message handed to a parked consumer waited for it (SLOWLOG at 500 msg/s: produce.lua
-- p50 29-46, p98 143-179, p99 175-237 µs). With a step here every settled batch keeps the
-- cycle under way, and the forced step finds little left: produce.lua p99 82-96 µs. A step
-- does bounded work whatever else the Redis holds, and no setting of Lua's changes.
-- (fetch.lua does not step: the idle poll would pay for nothing.)
collectgarbage('step', 0)

-- the leases are ARGV[3 .. 2 + n], their ids ARGV[3 + n ..]; counters instead of #t (Lua
-- finds a table's length by binary search)
local first, n = 3, (#ARGV - 2) / 2
local reply = { 0 }
if n < 1 or n % 1 ~= 0 then
  if #ARGV > 2 then return redis.error_reply('ack.lua: a lease without its id') end
  record_metrics(KEYS[5], now_ms(ARGV[1]), 0, 0, ARGV[2])
  return reply
end

-- A constant number of calls per batch. Usually every lease is held and given once: moving
-- them all to +inf (XX: only those in `inflight`) changes exactly n scores, and the common
-- case learns that without ZMSCORE, whose reply prints every score with "%.17g" (3,800
-- instructions a lease in Redis 7.0); the leases then go with one ZREM. (The moved leases
-- are deleted before the script ends, so nothing sees them at +inf.)
local find, byte = string.find, string.byte
local done, ids, ndone, nreply = {}, {}, 0, 1
local moved = {}
for i = 1, n do
  local lease, id = ARGV[first + i - 1], ARGV[first + n + i - 1]
  if find(lease, id, 1, true) == 1 and byte(lease, #id + 1) == 124 then
    moved[2 * ndone + 1], moved[2 * ndone + 2] = 'inf', lease
    ndone = ndone + 1
    done[ndone], ids[ndone] = lease, id
  else
    nreply = nreply + 1
    reply[nreply] = id
  end
end
if ndone > 0 and redis.call('ZADD', KEYS[2], 'XX', 'CH', unpack(moved, 1, 2 * ndone)) < ndone then
  -- some lease is stale, or came twice (its second move changed nothing): look each up
  -- (the held ones are at +inf now) and complete each held lease once
  local held = redis.call('ZMSCORE', KEYS[2], unpack(done, 1, ndone))
  local seen, kept, kept_ids = {}, {}, {}
  for i = 1, ndone do
    local lease = done[i]
    if held[i] and not seen[lease] then
      seen[lease] = true
      kept[#kept + 1], kept_ids[#kept_ids + 1] = lease, ids[i]
    else
      nreply = nreply + 1
      reply[nreply] = ids[i]
    end
  end
  done, ids, ndone = kept, kept_ids, #kept
end
if ndone > 0 then redis.call('ZREM', KEYS[2], unpack(done, 1, ndone)) end
if ndone > 0 then
  redis.call('HDEL', KEYS[1], unpack(ids, 1, ndone))
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('HDEL', KEYS[3], unpack(ids, 1, ndone)) end
  redis.call('HINCRBY', KEYS[4], 'completed', fmt('%d', ndone))
  unpin_if_idle(KEYS[2])
end
record_metrics(KEYS[5], now_ms(ARGV[1]), ndone, 0, ARGV[2])
reply[1] = ndone
return reply
