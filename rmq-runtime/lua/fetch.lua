-- fetch.lua: lease up to N ready messages, in priority order, in one round trip.
--
-- KEYS[1] m          hash  id -> envelope
-- KEYS[2..4] p0..p2  lists of ready ids, per priority
-- KEYS[5] delayed    zset  id by due time
-- KEYS[6] inflight   zset  lease "<id>|<token>|<attempt>" by lease deadline (and LEASE_PIN)
-- KEYS[7] attempts   hash  id -> deliveries so far, while not in flight
-- KEYS[8] errors     hash  id -> failure record
-- KEYS[9] dead       zset  dead-lettered ids
-- KEYS[10] stats     hash  counters (`delivered` also numbers the lease tokens)
-- KEYS[11] paused    string, present while the topic is paused
-- KEYS[12] waiting   zset  parked consumers "<lease_ms>|<consumer>" by when they parked
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] N, most messages to lease (at most 1000: Lua's unpack limit)
-- ARGV[3] lease length (ms)
-- ARGV[4] max attempts (retries + 1) of this topic
-- ARGV[5] "1" to keep dead letters, "0" to drop them
-- ARGV[6] most dead letters kept (oldest evicted beyond)
-- ARGV[7] "1" to dead-letter expired messages (reason "expired"), "0" to delete them
-- ARGV[8] this consumer's `waiting` member, "<lease_ms>|<consumer>", or "" (never park)
--
-- In order, atomically:
-- 1. Lapsed leases (a consumer crashed or stalled): the delivery counts as an attempt;
--    the message goes back to the FRONT of its priority level (several keep the order of
--    their deadlines: the earliest is next), or to the dead-letter queue with reason
--    "consumer lost" once its attempts are used up.
-- 2. Due delayed messages (new or retried) join the BACK of their priority level, keeping
--    the priority they were produced with. A promotion of SPREAD_AT or more at once, or one
--    that makes a pending list that deep, makes `m` a hashtable (see SPREAD_AT in lib.lua).
-- 3. Up to N ids are popped, high before normal before low, FIFO within a level. An id
--    whose TTL has passed is never delivered: it is counted as expired and deleted (or
--    dead-lettered with reason "expired" when ARGV[7] and ARGV[5] are both "1"). Each
--    delivered id gets a lease (see lease_of in lib.lua: the attempt number, previous
--    attempts + 1, moves from `attempts` into it) scored now + lease length, with this
--    call's token (with the id, unique per delivery in the topic); ack.lua, fail.lua,
--    renew.lua and release.lua take the lease
--    back. A paused topic leases nothing (steps 1 and 2 still run, so nothing stalls), and
--    producers are not affected.
-- 4. A consumer that got fewer than N parks in `waiting` (ARGV[8]), so the next message
--    produced may be handed to it directly (push_to_parked in lib.lua); one that got N is
--    busy and leaves it.
-- Cost: a constant number of calls per popped batch, and per message one RPOP'd element,
-- one envelope read and one inflight member; `attempts` is read only when it has entries.
-- Returns: { now in µs (clock_us: the instant the times below were compared with),
--            next_due (earliest delayed, µs, -1), next_deadline (earliest lease, µs, -1),
--            expired (not delivered: TTL passed), lost (lapsed leases reclaimed),
--            lease1, envelope1, lease2, envelope2, ... }

local k = {
  messages = KEYS[1], delayed = KEYS[5], inflight = KEYS[6], attempts = KEYS[7],
  errors = KEYS[8], dead = KEYS[9], stats = KEYS[10],
  keep_dead = ARGV[5], max_dead = tonumber(ARGV[6]),
}
local now = now_ms(ARGV[1])
local want = tonumber(ARGV[2])
local lease_ms = tonumber(ARGV[3])
local max_attempts = tonumber(ARGV[4])
local keep_expired = ARGV[7]
local asked = want
-- Each step first looks at the earliest member only, so an idle topic costs a handful of
-- O(1)/O(log n) calls per fetch.
local function due_by(first) return first[2] and tonumber(first[2]) <= now end
-- Delayed messages are due at a fraction of a ms (produce.lua keeps Redis' µs), so they are
-- compared with the µs clock: promoted as soon as their µs has come.
local now_exact = clock_us / 1000
local function due_exactly(first) return first[2] and tonumber(first[2]) <= now_exact end

-- 1. reclaim lapsed leases; pushed to the front latest-deadline first, so the earliest
--    ends up next in line (LEASE_PIN is scored +inf: never due)
local first_lease = redis.call('ZRANGE', k.inflight, '0', '0', 'WITHSCORES')
local lapsed = {}
if due_by(first_lease) then
  lapsed = redis.call('ZRANGEBYSCORE', k.inflight, '-inf', now, 'LIMIT', '0', '1000')
end
local lost = 0
for i = #lapsed, 1, -1 do
  local lease = lapsed[i]
  redis.call('ZREM', k.inflight, lease)
  local id, attempts = parse_lease(lease)
  if not id then
    -- a member written before leases carried the attempt: a bare id (attempts in the hash)
    id, attempts = lease, tonumber(redis.call('HGET', k.attempts, lease)) or 1
  end
  local envelope = redis.call('HGET', k.messages, id)
  if envelope then
    local exhausted = attempts >= max_attempts
    redis.call('HSET', k.attempts, id, attempts)
    record_failure(k, id, now, exhausted and 'consumer lost' or '',
      'consumer lost: lease expired during attempt ' .. attempts)
    redis.call('HINCRBY', k.stats, 'lost', '1')
    lost = lost + 1
    if exhausted then
      dead_letter(k, id, now)
    else
      redis.call('RPUSH', KEYS[2 + priority_of(envelope)], id)
    end
  end
end

if lost > 0 then
  unpin_if_idle(k.inflight)
  first_lease = redis.call('ZRANGE', k.inflight, '0', '0', 'WITHSCORES')
end

-- 2. promote due delayed messages
local first_due = redis.call('ZRANGE', k.delayed, '0', '0', 'WITHSCORES')
if due_exactly(first_due) then
  -- in bulk (a burst of messages due together is one call each, not three per message):
  -- the due ids are the lowest ranks, so removing that many ranks removes exactly them
  local due = redis.call('ZRANGEBYSCORE', k.delayed, '-inf', now_exact, 'LIMIT', '0', '1000')
  redis.call('ZREMRANGEBYRANK', k.delayed, '0', fmt('%d', #due - 1))
  -- see SPREAD_AT in lib.lua (`m` holds the due messages, so the wide field can go at once)
  local function spread()
    local wide = string.rep('~', 257)
    if redis.call('HSETNX', k.messages, wide, '') == 1 then redis.call('HDEL', k.messages, wide) end
  end
  local spread_done = #due >= SPREAD_AT
  if spread_done then spread() end
  local envelopes = redis.call('HMGET', k.messages, unpack(due))
  local by_level = {}
  for i = 1, #due do
    local id, envelope = due[i], envelopes[i]
    if envelope then
      local level = priority_of(envelope)
      local ids = by_level[level]
      if ids then ids[#ids + 1] = id else by_level[level] = { id } end
    end
  end
  for level, ids in pairs(by_level) do
    local len = redis.call('LPUSH', KEYS[2 + level], unpack(ids))
    if not spread_done and len >= SPREAD_AT and len - #ids < SPREAD_AT then
      spread_done = true
      spread()
    end
  end
  first_due = redis.call('ZRANGE', k.delayed, '0', '0', 'WITHSCORES')
end

-- 3. lease up to N ready messages (a constant number of calls per popped batch)
local reply = { clock_us, -1, -1, 0, lost }
local nreply = 5 -- #reply, kept by hand: Lua finds a table's length by binary search
local leased = 0
local expired = 0
local deadline = fmt('%d', now + lease_ms)
if want > 0 and redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) == 0 then want = 0 end
if want > 0 and redis.call('EXISTS', KEYS[11]) == 1 then want = 0 end
local any_attempts = nil -- does `attempts` have entries? asked once, when first needed
-- Messages stored together (a batch, or sends within one ms) share the header bytes that
-- give their expiry: bytes 16-30 are compared as one string with the last ones read, and
-- read (4,600 instructions, callgrind) only when they differ.
local read_key, read_expire = nil, 0
local token = nil -- this call's lease token (text), from the first batch it leases
for level = 0, 2 do
  while leased < want do
    local ids = redis.call('RPOP', KEYS[2 + level], fmt('%d', want - leased))
    if not ids then break end
    local envelopes = redis.call('HMGET', k.messages, unpack(ids))
    -- the popped ids and their envelopes are the live ones until one turns out gone or
    -- expired; from then on the live ones are copied (numeric loops here: ipairs calls a
    -- function per element)
    local live, live_envelopes, nlive = ids, envelopes, 0
    for i = 1, #ids do
      local id, envelope = ids[i], envelopes[i]
      local out = not envelope
      if envelope then
        local key, expire = string.sub(envelope, 16, 30), read_expire
        if key ~= read_key then
          local exact
          expire, exact = expire_of(envelope)
          read_key, read_expire = exact and key, expire
        end
        if expire > 0 and now >= expire then
          out = true
          expired = expired + 1
          if keep_expired == '1' and k.keep_dead == '1' then
            record_failure(k, id, now, 'expired', 'expired before delivery (TTL ended at ' .. expire .. ')')
            dead_letter(k, id, now)
          else
            forget(k, id)
          end
        end
      end
      if not out then
        nlive = nlive + 1
        if live ~= ids then live[nlive], live_envelopes[nlive] = id, envelope end
      elseif live == ids then
        live, live_envelopes = {}, {}
        for j = 1, nlive do live[j], live_envelopes[j] = ids[j], envelopes[j] end
      end
    end
    if nlive > 0 then
      if any_attempts == nil then any_attempts = redis.call('EXISTS', k.attempts) == 1 end
      local previous = any_attempts and redis.call('HMGET', k.attempts, unpack(live)) or {}
      local first_token = redis.call('HINCRBY', k.stats, 'delivered', fmt('%d', nlive)) - nlive
      if not token then token = fmt('%d', first_token + 1) end
      local members, carried = { '+inf', LEASE_PIN }, {}
      for i = 1, nlive do
        local id, before = live[i], previous[i]
        local attempt = '1'
        if before then
          carried[#carried + 1] = id
          attempt = fmt('%d', (tonumber(before) or 0) + 1)
        end
        local lease = lease_of(id, token, attempt)
        members[2 * i + 1] = deadline
        members[2 * i + 2] = lease
        reply[nreply + 1], reply[nreply + 2] = lease, live_envelopes[i]
        nreply = nreply + 2
      end
      redis.call('ZADD', k.inflight, unpack(members))
      if #carried > 0 then redis.call('HDEL', k.attempts, unpack(carried)) end
      leased = leased + nlive
    end
  end
end
if expired > 0 then redis.call('HINCRBY', k.stats, 'expired', fmt('%d', expired)) end
reply[4] = expired

-- 4. park or leave
local park = ARGV[8]
if park ~= nil and park ~= '' then
  if asked > 0 and leased < asked then
    redis.call('ZADD', KEYS[12], fmt('%d', now), park)
  else
    redis.call('ZREM', KEYS[12], park)
  end
end

-- both in µs: the due time to the nearest µs (its score is within a fraction of a µs of
-- it), the lease deadline from whole ms
if first_due[2] then reply[2] = math.floor(tonumber(first_due[2]) * 1000 + 0.5) end
-- the earliest lease: the one that was first before or the ones just made
local first_deadline = -1
if first_lease[2] and first_lease[1] ~= LEASE_PIN then first_deadline = tonumber(first_lease[2]) end
if leased > 0 and (first_deadline < 0 or tonumber(deadline) < first_deadline) then
  first_deadline = tonumber(deadline)
end
if first_deadline >= 0 then reply[3] = first_deadline * 1000 end
return reply
