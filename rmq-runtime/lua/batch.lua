-- batch.lua: finish a batch of new ready messages that the same MULTI has just stored.
--
-- KEYS[1] m         hash  id -> envelope
-- KEYS[2..4] p0..p2 lists of ready ids, per priority
-- KEYS[5] stats     hash  counters
-- KEYS[6] wake      (pub/sub channel name; passed as a key so its slot is known)
-- KEYS[7] inflight  zset  leases by deadline
-- KEYS[8] waiting   zset  parked (idle) consumers, see fetch.lua
-- KEYS[9] paused    string, present while the topic is paused
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] the stamp (produced_ms) the client wrote into the envelopes
-- ARGV[3] n, how many messages the MULTI stored: the last n ids it LPUSHed
-- ARGV[4] their priority (0|1|2)
-- ARGV[5] their TTL in ms (0 = none)
-- ARGV[6] "late" when this runs after the MULTI, on its own: the EVALSHA in it met
--         NOSCRIPT (Redis lost its scripts), so the batch is stored but not finished
--
-- producer.rs sends a batch this way when Redis need not look at it first: ids the client
-- generated for this first try (new and distinct, as produce.lua's ARGV[3] says), all
-- ready, one priority and TTL, envelopes stamped from its estimate of Redis' clock. The
-- MULTI is `HSET m id envelope ...`, `LPUSH p<prio> id ...`, then an EVALSHA of this script,
-- so no message passes through Lua: each message costs Redis about half as much as in
-- produce.lua, where every id and envelope became a Lua string and then a Redis argument
-- again (callgrind). A MULTI runs nothing else in between, and Redis runs all of it or
-- (rejected while queued: out of memory, say) none. This script then does what produce.lua
-- does for such a call:
-- - a stamp not within STAMP_SLACK ms before now is refused: the batch's headers are
--   rewritten from Redis' clock (the ids are the first n of the list);
-- - `produced` counts the batch;
-- - a batch that takes `m` past SPREAD_AT makes it a hashtable (see lib.lua);
-- - when nothing else was ready and the topic is not paused, the batch's first message
--   goes straight to the consumer that parked last (push_to_parked in lib.lua);
-- - when the list was empty before and still holds some of the batch, a wake-up 'p'.
-- A late run (ARGV[6]) cannot tell the batch from what came after it: it keeps the stamps
-- (the client's estimate of this clock, early by at most a round trip), hands nothing to a
-- parked consumer, and wakes consumers when the list holds anything.
-- Returns: as produce.lua, Redis' clock in µs when the stamp was kept, else
-- { clock in µs, 0 }.

local STAMP_SLACK = 2

local now = now_ms(ARGV[1])
local stamp, n, prio, ttl = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local list = (prio == '0' and KEYS[2]) or (prio == '1' and KEYS[3]) or (prio == '2' and KEYS[4])
if not (stamp and n and n >= 1 and list and ttl) then
  return redis.error_reply('batch.lua: malformed arguments')
end

local late = ARGV[6] == 'late'
local kept = late or (stamp <= now and stamp >= now - STAMP_SLACK)
if not kept then
  -- "<prio>|<produced_ms>|<expire_ms>|" as the client wrote it, then as Redis writes it
  local function header(produced)
    local expire = '0'
    if ttl > 0 then expire = fmt('%d', produced + ttl) end
    return prio .. '|' .. fmt('%d', produced) .. '|' .. expire .. '|'
  end
  local cut, head = #header(stamp), header(now)
  local ids = redis.call('LRANGE', list, '0', fmt('%d', n - 1))
  local envelopes = redis.call('HMGET', KEYS[1], unpack(ids))
  local fields = {}
  for i, id in ipairs(ids) do
    fields[2 * i - 1], fields[2 * i] = id, head .. string.sub(envelopes[i], cut + 1)
  end
  redis.call('HSET', KEYS[1], unpack(fields))
end

redis.call('HINCRBY', KEYS[5], 'produced', ARGV[3])

-- see SPREAD_AT in lib.lua (the batch is stored: the wide field can go at once)
local size = redis.call('HLEN', KEYS[1])
if size >= SPREAD_AT and size - n < SPREAD_AT then
  local wide = string.rep('~', 257)
  if redis.call('HSETNX', KEYS[1], wide, '') == 1 then redis.call('HDEL', KEYS[1], wide) end
end

-- the list was empty before exactly when it holds just the batch
local len = redis.call('LLEN', list)
if late then
  if len > 0 then redis.call('PUBLISH', KEYS[6], 'p') end
elseif len == n then
  -- as produce.lua's hand_to_parked: `waiting` counted five times and the other lists and
  -- `paused` once each make exactly 5 when a consumer is parked and nothing else is there
  local w, handed = KEYS[8], false
  local a, b = KEYS[2], KEYS[3]
  if list == KEYS[2] then a = KEYS[4] elseif list == KEYS[3] then b = KEYS[4] end
  if redis.call('EXISTS', w, w, w, w, w, a, b, KEYS[9]) == 5 then
    local id = redis.call('RPOP', list)
    handed = push_to_parked(w, KEYS[7], KEYS[5], KEYS[6], id, redis.call('HGET', KEYS[1], id), now)
    if not handed then redis.call('RPUSH', list, id) end
  end
  if not handed or n > 1 then redis.call('PUBLISH', KEYS[6], 'p') end
end

if kept then return clock_us end
return { clock_us, 0 }
