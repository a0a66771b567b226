-- renew.lua: extend the leases of messages whose handlers are still running.
--
-- KEYS[1] inflight   zset  id by lease deadline
-- KEYS[2] leases     hash  id -> lease token, while in flight
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] lease length (ms)
-- ARGV[3..] pairs: id, lease token
--
-- Guarantees: one round trip renews every running handler of a consumer; a lease is
-- extended only while the caller still holds it, so a lease that already lapsed (and may
-- have been handed to another consumer) is never taken back.
-- Returns: { renewed count, lost id, lost id, ... }

local k = { inflight = KEYS[1], leases = KEYS[2] }
local now = now_ms(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local reply = { 0 }
local renewed = 0
for i = 3, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds_lease(k, id, token) then
    redis.call('ZADD', k.inflight, 'XX', deadline, id)
    renewed = renewed + 1
  else
    reply[#reply + 1] = id
  end
end
reply[1] = renewed
return reply
