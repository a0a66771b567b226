-- renew.lua: extend the leases of messages whose handlers are still running.
--
-- KEYS[1] inflight   zset  lease "<id>|<token>|<attempt>" by lease deadline
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] lease length (ms)
-- ARGV[3..] leases, as fetch.lua returned them
--
-- Guarantees: one round trip renews every running handler of a consumer; a lease is
-- extended only while the caller still holds it, so a lease that already lapsed (and may
-- have been handed to another consumer) is never taken back.
-- Returns: { renewed count, lost id, lost id, ... }

local now = now_ms(ARGV[1])
local deadline = now + tonumber(ARGV[2])
local reply = { 0 }
local renewed = 0
for i = 3, #ARGV do
  local lease = ARGV[i]
  if redis.call('ZSCORE', KEYS[1], lease) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, lease)
    renewed = renewed + 1
  else
    reply[#reply + 1] = lease_id(lease)
  end
end
reply[1] = renewed
return reply
