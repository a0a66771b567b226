-- purge.lua: delete dead-lettered messages for good.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2] dead       zset  dead-lettered ids
-- KEYS[3] attempts   hash  id -> deliveries so far
-- KEYS[4] errors     hash  id -> failure record
-- KEYS[5] stats      hash  counters
-- ARGV[1] now (unused; every script takes the clock first)
-- ARGV[2] most messages to delete in this call (the client repeats until 0), or
-- ARGV[2..] "id:" followed by ids, to delete just those
--
-- Guarantees: only ids that are dead right now are deleted, with every trace; bounded work
-- per call so a huge DLQ never blocks Redis for long.
-- Returns: number purged.

local k = { messages = KEYS[1], attempts = KEYS[3], errors = KEYS[4] }
local ids
if ARGV[2] == 'id:' then
  ids = {}
  for i = 3, #ARGV do
    if redis.call('ZREM', KEYS[2], ARGV[i]) == 1 then ids[#ids + 1] = ARGV[i] end
  end
else
  ids = {}
  local popped = redis.call('ZPOPMIN', KEYS[2], tonumber(ARGV[2]))
  for i = 1, #popped, 2 do ids[#ids + 1] = popped[i] end
end
for _, id in ipairs(ids) do
  forget(k, id)
end
if #ids > 0 then redis.call('HINCRBY', KEYS[5], 'purged', #ids) end
return #ids
