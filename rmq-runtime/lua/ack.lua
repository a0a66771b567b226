-- ack.lua: complete a batch of leased messages in one round trip.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2] inflight   zset  id by lease deadline
-- KEYS[3] attempts   hash  id -> deliveries so far (the lease token)
-- KEYS[4] errors     hash  id -> failure record
-- KEYS[5] stats      hash  counters
-- ARGV[1] now (unused; every script takes the clock first)
-- ARGV[2..] pairs: id, lease token (the attempt number fetch.lua returned)
--
-- Guarantees: a message is completed only by the holder of its current lease (it is in
-- inflight and its attempt count equals the token); then nothing of it is left in Redis.
-- A stale token (the lease lapsed and the message was re-leased or dead-lettered)
-- changes nothing.
-- Returns: { completed count, stale id, stale id, ... }

local k = { messages = KEYS[1], inflight = KEYS[2], attempts = KEYS[3], errors = KEYS[4] }
local reply = { 0 }
local completed = 0
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds_lease(k, id, token) then
    redis.call('ZREM', k.inflight, id)
    forget(k, id)
    completed = completed + 1
  else
    reply[#reply + 1] = id
  end
end
if completed > 0 then redis.call('HINCRBY', KEYS[5], 'completed', completed) end
reply[1] = completed
return reply
