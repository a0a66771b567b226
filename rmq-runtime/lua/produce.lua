-- produce.lua: store a batch of new messages and make each pending or delayed.
--
-- KEYS[1] m         hash  id -> envelope
-- KEYS[2..4] p0..p2 lists of ready ids, per priority
-- KEYS[5] delayed   zset  id by due time
-- KEYS[6] stats     hash  counters
-- KEYS[7] wake      (pub/sub channel name; passed as a key so its slot is known)
-- KEYS[8] inflight  zset  leases by deadline
-- KEYS[9] waiting   zset  parked (idle) consumers, see fetch.lua
-- KEYS[10] paused   string, present while the topic is paused
-- ARGV[1] now (ms, "" = Redis TIME)
-- ARGV[2] stamp: "" when the messages below are bare bodies; else the produced_ms the
--         client wrote into the whole envelopes below, "<prio>|<stamp>|<expire_ms>|<body>"
--         (expire_ms = stamp + delay in whole ms, rounded up + ttl; 0 without a TTL)
-- ARGV[3..] runs of messages that share priority, delay and TTL (a batch is usually one):
--           count, priority (0|1|2), delay_us, ttl_ms (0 = none), then count pairs
--           id, body (or envelope, see ARGV[2])
--
-- The envelope's timestamps come from Redis' clock. A client that knows that clock well
-- (from the replies below) writes the envelopes itself, which saves Redis building a new
-- string per message (a fifth of this script's cost in a batch): its stamp is used when it
-- lies within STAMP_SLACK ms before Redis' now, never after it. Any other stamp is
-- refused, and the header is rewritten from Redis' own clock, as for bare bodies.
--
-- Guarantees: a message whose id is already stored (in any state, dead included) is left
-- untouched and reported as a duplicate: producing with an explicit id is idempotent.
-- An id given twice in one call is stored once, as its first occurrence; the later ones are
-- duplicates.
-- Within a priority, ready messages keep production order (LPUSH here, RPOP in fetch).
-- An idle consumer parked in `waiting` is handed the call's first ready message directly
-- (push_to_parked in lib.lua: leased to it and published on its channel, one round trip
-- saved) when no other message is ready and the topic is not paused; the message is then
-- in flight, not pending.
-- At most one wake-up per call: 'p' when a pending list went from empty to non-empty,
-- otherwise 'd' when a new delayed message became the earliest one.
-- Returns: { Redis' clock in µs, 1 if the stamp was used (else 0), then the positions
-- (1 = the first message of the call) of the duplicates, in order }. (Positions, not one
-- flag per message: a reply element costs Redis and the client about as much as an
-- argument.) A call of one message that is stored with its stamp (the usual `send()`)
-- returns only the clock, as an integer: a table reply costs Redis about 6000
-- instructions (callgrind), a twentieth of such a call.
--
-- Malformed runs are an error, before anything is stored. (A refused stamp's header is cut
-- off by its length, which the stamp, delay and TTL fix: the client's headers are trusted.)
--
-- Cost: one message takes HSETNX and LPUSH (or ZADD), besides TIME, a look at `waiting`
-- and the `produced` count; with a kept stamp it is stored before the helpers the other
-- paths need are even defined (each Lua closure costs Redis 400-1300 instructions a call).
-- A batch takes a constant number of Redis calls per chunk of up to 1000 messages of a
-- run -- HMGET for the duplicate check, one HSET of the envelopes, one LPUSH or ZADD --
-- since a redis.call costs more than the work it does. When the stamp is used and no id
-- is a duplicate, the HSET takes the arguments as they came (no table is built for it).
-- Runs keep the arguments at about two per message: Redis reads, and Lua copies, every
-- argument.

-- globals are table lookups; locals are registers
local ARGV, KEYS, tonumber, unpack = ARGV, KEYS, tonumber, unpack

local STAMP_SLACK = 2

local now = now_ms(ARGV[1])
local stamp = tonumber(ARGV[2])
if ARGV[2] ~= '' and not stamp then
  return redis.error_reply('produce.lua: malformed stamp ' .. ARGV[2])
end
-- true: the arguments are the envelopes to store; false: they need Redis' header, and
-- `rewrite` says whether a client's header must come off first
local stamped = stamp ~= nil and stamp <= now and stamp >= now - STAMP_SLACK
local rewrite = not stamped and ARGV[2] ~= ''

-- A delay comes in µs, and its due time keeps Redis' µs: a score in ms with a fraction
-- (fetch.lua compares it with the µs clock, so the message is never early and is not held
-- back to the next whole ms; rounding up cost 0.5 ms of lateness on average). Distinct µs
-- stay distinct doubles (a score's step is under 1 µs until the year 2248).
local function due_after(delay_us)
  return (clock_us + delay_us) / 1000
end

-- True when the new ready message `id` went straight to a parked consumer: offered when
-- nothing else is ready and the topic is not paused (a consumer parks with free workers,
-- and a push skips the queue). One EXISTS asks all three questions: it counts a key named
-- five times five times, so `waiting` five times and the other four keys once each count
-- exactly 5 when a consumer is parked and none of the others exists.
local function hand_to_parked(id, envelope)
  local w = KEYS[9]
  return redis.call('EXISTS', w, w, w, w, w, KEYS[2], KEYS[3], KEYS[4], KEYS[10]) == 5
    and push_to_parked(w, KEYS[8], KEYS[6], KEYS[7], id, envelope, now)
end

-- Stores the one message of a call of one: HSETNX checks and stores it in one Redis call.
-- False when the id is already stored.
local function store_one(id, prio, delay, envelope)
  if redis.call('HSETNX', KEYS[1], id, envelope) == 0 then return false end
  if delay > 0 then
    redis.call('ZADD', KEYS[5], due_after(delay), id)
    wake_if_earliest(KEYS[5], KEYS[7], id)
  elseif not hand_to_parked(id, envelope) and redis.call('LPUSH', KEYS[2 + prio], id) == 1 then
    redis.call('PUBLISH', KEYS[7], 'p')
  end
  redis.call('HINCRBY', KEYS[6], 'produced', '1') -- text: a number costs a sprintf
  return true
end

-- A call of one message (`send()`), read without tonumber where the usual values allow
-- (a strtod each, about 1000 instructions).
local single = #ARGV == 8 and ARGV[3] == '1'
local one_prio, one_delay, one_ttl
if single then
  local p, delay = ARGV[4], ARGV[5]
  one_prio = (p == '1' and 1) or (p == '0' and 0) or (p == '2' and 2)
  if delay == '0' then one_delay = 0 else one_delay = tonumber(delay) end
  one_ttl = tonumber(ARGV[6])
  if not (one_prio and one_delay and one_ttl) then
    return redis.error_reply('produce.lua: malformed run at argument 3')
  end
end

-- With a kept stamp (the usual case, once the client knows Redis' clock) it is stored as it
-- came, before the helpers below are even defined, and the reply is one integer, not
-- { clock_us, 1 } (see the header).
if single and stamped then
  if store_one(ARGV[7], one_prio, one_delay, ARGV[8]) then return clock_us end
  return { clock_us, 1, 1 }
end

-- The envelope's header, "<prio>|<produced_ms>|<expire_ms>|" (the body follows). TTL counts
-- from the moment the message becomes ready, so a long delay cannot use it up.
-- `produced` is Redis' now, or the client's stamp as it sent it (to measure its header).
local function header(produced, prio, delay, ttl)
  local expire = 0
  if ttl > 0 then expire = tonumber(produced) + math.ceil(delay / 1000) + ttl end
  return prio .. '|' .. produced .. '|' .. expire .. '|'
end

-- What to prepend to the bodies of a run, and how many bytes of the client's header to cut
-- off first (the same for the whole run: its priority, delay and TTL are shared). Nil when
-- the envelopes are stored as they came.
local function rewriting(prio, delay, ttl)
  if stamped then return nil, 0 end
  local cut = 0
  if rewrite then cut = #header(ARGV[2], prio, delay, ttl) end
  return header(now, prio, delay, ttl), cut
end

-- The envelope to store for argument `a`, given its run's `rewriting`.
local function envelope_at(a, head, cut)
  if not head then return ARGV[a] end
  if cut > 0 then return head .. string.sub(ARGV[a], cut + 1) end
  return head .. ARGV[a]
end

local function reply(duplicates)
  local used = 0
  if stamped then used = 1 end
  local out = { clock_us, used }
  for i = 1, #duplicates do out[i + 2] = duplicates[i] end
  return out
end

-- Without one, Redis writes its header first.
if single then
  local envelope = envelope_at(8, rewriting(one_prio, one_delay, one_ttl))
  if store_one(ARGV[7], one_prio, one_delay, envelope) then return reply({}) end
  return reply({ 1 })
end

local k = { messages = KEYS[1], delayed = KEYS[5], stats = KEYS[6], wake = KEYS[7] }

-- the first ready message of a call is offered to a parked consumer
local push_tried = false
local function handed(id, envelope)
  if push_tried then return false end
  push_tried = true
  return hand_to_parked(id, envelope)
end

-- The runs, checked before anything is stored: the ARGV index of each run's count.
local runs = {}
do
  local a, nargs = 3, #ARGV
  while a <= nargs do
    local count, prio = tonumber(ARGV[a]), ARGV[a + 1]
    if not count or count < 1 or count % 1 ~= 0 or a + 3 + 2 * count > nargs
      or not (prio == '0' or prio == '1' or prio == '2')
      or not tonumber(ARGV[a + 2]) or not tonumber(ARGV[a + 3]) then
      return redis.error_reply('produce.lua: malformed run at argument ' .. a)
    end
    runs[#runs + 1] = a
    a = a + 4 + 2 * count
  end
end

local CHUNK = 1000     -- messages per Redis call (Lua's unpack takes about 8000 values)
local duplicates = {}  -- the reply: positions of the duplicates
local position = 0     -- of the last message looked at, in the call
local stored = 0
local woke = false
local new = {}         -- id -> 'ready' | 'delayed', for the ids this call stored

-- Makes ready ids[first..last] pending (the first of the call may go to a parked consumer
-- instead). LPUSH returns the new length, which equals the number pushed exactly when the
-- list was empty before.
local function push_ready(list, ids, first, last, envelope_of_first)
  if first <= last and not push_tried and handed(ids[first], envelope_of_first) then
    first = first + 1
  end
  if first > last then return end
  if redis.call('LPUSH', list, unpack(ids, first, last)) == last - first + 1 and not woke then
    redis.call('PUBLISH', k.wake, 'p')
    woke = true
  end
end

-- Stores the n messages of run `run` whose first id is ARGV[b] (pairs id, body follow).
local function store(run, b, n)
  local prio, delay, ttl = tonumber(ARGV[run + 1]), tonumber(ARGV[run + 2]), tonumber(ARGV[run + 3])
  local list, kind = KEYS[2 + prio], 'ready'
  if delay > 0 then kind = 'delayed' end
  local ids = {}
  for j = 1, n do ids[j] = ARGV[b + 2 * j - 2] end
  local existing = redis.call('HMGET', k.messages, unpack(ids, 1, n))
  local due = delay > 0 and due_after(delay)

  -- the usual case: no duplicate, envelopes as the client wrote them
  local clean = stamped
  if clean then
    for j = 1, n do
      local id = ids[j]
      if existing[j] or new[id] then
        for i = 1, j - 1 do new[ids[i]] = nil end
        clean = false
        break
      end
      new[id] = kind
    end
  end
  if clean then
    redis.call('HSET', k.messages, unpack(ARGV, b, b + 2 * n - 1))
    position, stored = position + n, stored + n
    if delay == 0 then
      push_ready(list, ids, 1, n, ARGV[b + 1])
    else
      local scored = {}
      for j = 1, n do scored[2 * j - 1], scored[2 * j] = due, ids[j] end
      redis.call('ZADD', k.delayed, unpack(scored, 1, 2 * n))
    end
    return
  end

  -- otherwise one message at a time: HSET arguments (id, envelope, ...), ready ids in
  -- order, ZADD arguments (due, id, ...)
  local head, cut = rewriting(prio, delay, ttl)
  local fields, nfields, fresh, nfresh, first_envelope = {}, 0, {}, 0, nil
  for j = 1, n do
    local id = ids[j]
    position = position + 1
    if existing[j] or new[id] then
      duplicates[#duplicates + 1] = position
    else
      new[id] = kind
      local envelope = envelope_at(b + 2 * j - 1, head, cut)
      fields[nfields + 1], fields[nfields + 2] = id, envelope
      nfields = nfields + 2
      nfresh = nfresh + 1
      if delay > 0 then
        fresh[2 * nfresh - 1], fresh[2 * nfresh] = due, id
      else
        fresh[nfresh] = id
        first_envelope = first_envelope or envelope
      end
    end
  end
  if nfresh == 0 then return end
  stored = stored + nfresh
  redis.call('HSET', k.messages, unpack(fields, 1, nfields))
  if delay == 0 then
    push_ready(list, fresh, 1, nfresh, first_envelope)
  else
    redis.call('ZADD', k.delayed, unpack(fresh, 1, 2 * nfresh))
  end
end

local any_delayed = false
for _, run in ipairs(runs) do
  local count = tonumber(ARGV[run])
  for done = 0, count - 1, CHUNK do
    store(run, run + 4 + 2 * done, math.min(CHUNK, count - done))
  end
  if ARGV[run + 2] ~= '0' then any_delayed = true end
end

-- a new delayed message became the earliest exactly when the earliest now is one of them
if any_delayed and not woke and new[redis.call('ZRANGE', k.delayed, 0, 0)[1]] == 'delayed' then
  redis.call('PUBLISH', k.wake, 'd')
end

if stored > 0 then redis.call('HINCRBY', k.stats, 'produced', stored) end
return reply(duplicates)
