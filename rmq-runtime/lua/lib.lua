-- lib.lua: helpers prepended to every script (no state change of its own).
--
-- All scripts take their clock from ARGV[1] ("" = Redis' own TIME), so tests can drive a
-- controllable clock while production uses the one clock every client shares.

-- now_ms also sets clock_us, the same instant in microseconds (for replies that tell a
-- client how long to wait: whole milliseconds would make it wake up to 1 ms late, and for
-- the due times of delayed messages, which keep their µs). A given clock may have a
-- fraction of a ms, which only clock_us keeps, as with Redis' TIME.
local clock_us = 0

-- A whole number as text. Lua's own conversion (`tostring`, `..`) is sprintf("%.14g"), and
-- a number given to redis.call is sprintf'd with "%.17g": a floating-point format costs
-- Redis about 2,500 instructions (callgrind), fmt('%d', n) about half that, and a literal
-- written as text ('0', not 0) nothing. Only for whole numbers: %d truncates.
local fmt = string.format

local function now_ms(arg)
  if arg ~= nil and arg ~= '' then
    clock_us = tonumber(arg) * 1000
    return math.floor(tonumber(arg))
  end
  local t = redis.call('TIME')
  clock_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return math.floor(clock_us / 1000)
end

-- When something `delay` ms from now is due (a retry): `now` is whole ms rounded down, so
-- this rounds up -- a message must never run before its time (up to 1 ms early otherwise).
-- (A delay given at produce time keeps Redis' µs instead: produce.lua `due_after`.)
local function due_in(delay)
  return math.ceil(clock_us / 1000) + delay
end

-- The priority digit (0 high, 1 normal, 2 low) is the envelope's first byte.
local function priority_of(envelope)
  return string.byte(envelope, 1) - 48
end

-- Field 3 of "<prio>|<produced_ms>|<expire_ms>|...": 0 means no TTL. fetch asks once per
-- message, so the usual shapes are read from bytes, without a pattern match and tonumber
-- (together 0.37 us; this 0.1-0.25 us): a 13-digit produced_ms (years 2001-2286) ends at
-- byte 15, so "|0|" at bytes 16-18 means no TTL, and an expiry (never before produced_ms,
-- so 13 digits or more) of 13 digits sits at bytes 17-29, followed by '|' (the default
-- 24 h TTL gives every message one). Anything else takes the pattern. The second result
-- is true when bytes 16-30 alone decided (so an envelope with the same bytes there has the
-- same expiry).
local function expire_of(envelope)
  local bar, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, d12, d13, bar2 =
    string.byte(envelope, 16, 30)
  if bar == 124 then
    if d1 == 48 and d2 == 124 then return 0, true end
    if bar2 == 124
      and d1 >= 48 and d1 <= 57 and d2 >= 48 and d2 <= 57 and d3 >= 48 and d3 <= 57
      and d4 >= 48 and d4 <= 57 and d5 >= 48 and d5 <= 57 and d6 >= 48 and d6 <= 57
      and d7 >= 48 and d7 <= 57 and d8 >= 48 and d8 <= 57 and d9 >= 48 and d9 <= 57
      and d10 >= 48 and d10 <= 57 and d11 >= 48 and d11 <= 57 and d12 >= 48 and d12 <= 57
      and d13 >= 48 and d13 <= 57 then
      -- the digits' values: each byte minus 48, i.e. minus 48 * 1111111111111 in all
      return ((((((((((((d1 * 10 + d2) * 10 + d3) * 10 + d4) * 10 + d5) * 10 + d6) * 10
        + d7) * 10 + d8) * 10 + d9) * 10 + d10) * 10 + d11) * 10 + d12) * 10 + d13)
        - 53333333333328, true
    end
  end
  return tonumber(string.match(envelope, '^%d|%d+|(%d+)|')) or 0
end

-- Publishes a wake-up when `id` became the earliest delayed message (or a pending list
-- went from empty to non-empty), so idle consumers re-arm their timer without polling.
-- Returns true when it published.
local function wake_if_earliest(delayed_key, wake_channel, id)
  local first = redis.call('ZRANGE', delayed_key, '0', '0')
  if first[1] == id then
    redis.call('PUBLISH', wake_channel, 'd')
    return true
  end
  return false
end

-- Records one failure as "first_ms|last_ms|reason|error". `reason` is empty while the
-- message will be retried, and says why when this failure dead-letters it.
local function record_failure(k, id, now, reason, err)
  local previous = redis.call('HGET', k.errors, id)
  local first = now
  if previous then
    first = tonumber(string.match(previous, '^(%d+)|')) or now
  end
  redis.call('HSET', k.errors, id, first .. '|' .. now .. '|' .. reason .. '|' .. err)
end

-- A lease is the `inflight` member "<id>|<token>|<attempt>", scored by its deadline. The
-- token numbers the call that leased it: each call that leases takes fresh values of the
-- `delivered` counter (one per message) and all its leases carry the first, and a call
-- leases an id at most once, so id and token together are unique per delivery within the
-- topic. A consumer whose lease lapsed can never name a later delivery -- not a
-- re-delivery, not a message produced again under the same id, not a replayed one -- and
-- "the holder of the current lease" is whoever sends a member `inflight` still holds
-- (ZREM / ZMSCORE answer it). While a message is in flight its attempt number lives only
-- in its lease; `attempts` holds it while the message waits (retry, reclaim, DLQ).
-- `token` and `attempt` are strings, made once per call (`fmt`): Lua turns a number into
-- text with sprintf("%.14g"), which cost 0.25 us per number, a tenth of a drained
-- message's Redis time when fetch.lua made two per message.
local function lease_of(id, token, attempt)
  return id .. '|' .. token .. '|' .. attempt
end

-- While anything is in flight, `inflight` also holds LEASE_PIN, scored +inf (never due):
-- a member longer than 64 bytes keeps Redis from storing the zset as a listpack, where
-- every ZADD / ZREM / ZMSCORE scans the whole list (at the usual 100-200 leases that cost
-- 1.6 us of Redis CPU per message; the skiplist costs 0.3). It is not a lease (it does not
-- end in |<token>|<attempt>), and it goes with the last lease (unpin_if_idle).
local LEASE_PIN = '~pin~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~' -- 69 bytes

-- `m` holding small envelopes (64 bytes or less: payloads of up to 32 bytes with the
-- default 24 h TTL, 44 without one) stays in Redis' listpack encoding until it has 512 of
-- them, and there every HSETNX, HMGET and HDEL scans the whole list: with 100 such messages
-- in flight that was a quarter of a drain's Redis instructions, and a burst of 200 due
-- together took twice the instructions to promote and lease (callgrind). So the hash is
-- made a hashtable when the queue gets deeper than SPREAD_AT: in produce.lua, a single send
-- whose LPUSH makes a pending list that long, a single delayed send that finds `m` that
-- long (it looks when the topic's count of produced messages is a multiple of SPREAD_AT:
-- a delayed send has no free measure of depth), or a batch call that takes `m` past it
-- (before it stores anything); in fetch.lua, a promotion of that many due messages (before
-- it reads them) or one whose LPUSH makes a pending list that long. HSETNX of a field longer
-- than a listpack takes (string.rep('~', 257): longer than any message id) converts the
-- hash; the field goes again, only if this call added it (HSETNX overwrites nothing), and
-- never before the call has stored something else (a hash left empty is deleted). Redis
-- keeps a hash a hashtable until it is deleted, which happens when it empties. (Written
-- out where used, not a helper here: a helper here is a closure built on every call of
-- every script that names it.)
local SPREAD_AT = 32

-- Deletes `inflight` once it holds nothing but the pin.
local function unpin_if_idle(inflight)
  if redis.call('ZCARD', inflight) == 1 and redis.call('ZSCORE', inflight, LEASE_PIN) then
    redis.call('DEL', inflight)
  end
end

-- Hands the new ready message `id` straight to an idle consumer, saving it a round trip:
-- a consumer whose fetch found less than it asked for parks in `waiting` as
-- "<lease_ms>|<consumer>" (fetch.lua); this takes the one that parked last, leases the
-- message to it (attempt 1, a fresh token, as fetch.lua would) and publishes
-- "<#lease>:<lease><envelope>" on "<wake>:<consumer>". PUBLISH counts who got it: nobody
-- means that consumer is gone, so no lease is made, the token is given back, and the next
-- one is tried. A consumer that got it and then dies is like one that died after a fetch:
-- the lease lapses. The keys come one by one, not in a table: this runs on the latency
-- path, and a table costs Redis a few thousand instructions. Returns true when a consumer
-- took it.
local function push_to_parked(waiting, inflight, stats, wake, id, envelope, now)
  while true do
    local parked = redis.call('ZPOPMAX', waiting)
    if not parked[1] then return false end
    local lease_ms, consumer = string.match(parked[1], '^(%d+)|(.+)$')
    if consumer then
      -- the script is atomic: the consumer reads the message only after the lease exists
      local token = redis.call('HINCRBY', stats, 'delivered', '1')
      local lease = lease_of(id, fmt('%d', token), '1')
      local message = fmt('%d', #lease) .. ':' .. lease .. envelope
      if redis.call('PUBLISH', wake .. ':' .. consumer, message) > 0 then
        redis.call('ZADD', inflight, '+inf', LEASE_PIN, fmt('%d', now + tonumber(lease_ms)), lease)
        return true
      end
      if token == 1 then
        redis.call('HDEL', stats, 'delivered')
      else
        redis.call('HINCRBY', stats, 'delivered', '-1')
      end
    end
  end
end

-- The id and attempt number of a lease (the id may itself contain '|').
local function parse_lease(lease)
  local id, attempt = string.match(lease, '^(.*)|%d+|(%d+)$')
  return id, tonumber(attempt)
end

-- The id of a lease as a consumer sent it, for replies (the text itself if malformed).
-- (One pattern is cheaper than finding the first '|' and checking what follows it: three
-- calls into Lua's string library cost more than the backtracking, callgrind.)
local function lease_id(lease)
  return string.match(lease, '^(.*)|%d+|%d+$') or lease
end

-- Deletes every trace of a message (its queues must already be left).
local function forget(k, id)
  redis.call('HDEL', k.messages, id)
  redis.call('HDEL', k.attempts, id)
  redis.call('HDEL', k.errors, id)
end

-- Moves a message that has left every queue into the dead-letter zset, or deletes it
-- (counted as dropped) when dead letters are disabled (k.keep_dead ~= '1'). The envelope,
-- attempts and failure record stay while it is dead so it can be inspected and replayed.
-- The DLQ holds at most k.max_dead messages: the oldest are deleted and counted.
-- Returns true when the message was kept, false when it was dropped.
local function dead_letter(k, id, now)
  if k.keep_dead ~= '1' then
    forget(k, id)
    redis.call('HINCRBY', k.stats, 'dropped', '1')
    return false
  end
  redis.call('ZADD', k.dead, now, id)
  redis.call('HINCRBY', k.stats, 'dead', '1')
  local excess = redis.call('ZCARD', k.dead) - k.max_dead
  if excess > 0 then
    local oldest = redis.call('ZPOPMIN', k.dead, excess)
    for i = 1, #oldest, 2 do
      forget(k, oldest[i])
    end
    redis.call('HINCRBY', k.stats, 'dead_evicted', excess)
  end
  return true
end

-- Folds one settle call's figures into the topic's `metrics` hash (bounded: 20 histogram
-- buckets plus a ring of 60 one-minute slots), so stats cost no extra round trip.
-- `timings` is "field:n field:n ..." as the consumer summed them over the call's
-- attempts (hN bucket counts, hs sum in µs; the count is the buckets' sum); `completed` /
-- `failed` go to the slot of the current minute, which is reset when it still holds a
-- minute an hour old.
local function record_metrics(key, now, completed, failed, timings)
  if completed > 0 or failed > 0 then
    local minute = math.floor(now / 60000)
    local slot = fmt('%d', minute % 60)
    if tonumber(redis.call('HGET', key, 'm' .. slot)) ~= minute then
      redis.call('HSET', key, 'm' .. slot, fmt('%d', minute), 'c' .. slot, fmt('%d', completed),
        'f' .. slot, fmt('%d', failed))
    else
      if completed > 0 then redis.call('HINCRBY', key, 'c' .. slot, fmt('%d', completed)) end
      if failed > 0 then redis.call('HINCRBY', key, 'f' .. slot, fmt('%d', failed)) end
    end
  end
  for field, n in string.gmatch(timings or '', '(%w+):(%d+)') do
    redis.call('HINCRBY', key, field, n)
  end
end
