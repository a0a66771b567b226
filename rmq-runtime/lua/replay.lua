-- replay.lua: move dead-lettered messages back to pending.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2..4] p0..p2  lists of ready ids, per priority
-- KEYS[5] dead       zset  dead-lettered ids
-- KEYS[6] attempts   hash  id -> deliveries so far
-- KEYS[7] errors     hash  id -> failure record
-- KEYS[8] stats      hash  counters
-- KEYS[9] wake       pub/sub channel
-- ARGV[1] now (unused; every script takes the clock first)
-- ARGV[2..] ids
--
-- Guarantees: only ids that are dead right now move; each joins the BACK of the priority
-- level it was produced with, with its attempts and failure record reset (a fresh set of
-- retries) and no TTL (an operator asked for it to run, so it must not expire on the way).
-- Returns: number replayed.

local replayed = 0
for i = 2, #ARGV do
  local id = ARGV[i]
  if redis.call('ZREM', KEYS[5], id) == 1 then
    local envelope = redis.call('HGET', KEYS[1], id)
    if envelope then
      -- "<prio>|<produced>|<expire>|..." -> expire 0
      envelope = string.gsub(envelope, '^(%d|%d+|)%d+|', '%10|', 1)
      redis.call('HSET', KEYS[1], id, envelope)
      redis.call('HDEL', KEYS[6], id)
      redis.call('HDEL', KEYS[7], id)
      redis.call('LPUSH', KEYS[2 + priority_of(envelope)], id)
      replayed = replayed + 1
    end
  end
end
if replayed > 0 then
  redis.call('HINCRBY', KEYS[8], 'replayed', replayed)
  redis.call('PUBLISH', KEYS[9], 'p')
end
return replayed
