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
-- ARGV[2..] runs of messages that share priority, delay and TTL (a batch is usually one):
--           count, priority (0|1|2), delay_ms, ttl_ms (0 = none), then count pairs id, body
--
-- Guarantees: a message whose id is already stored (in any state, dead included) is left
-- untouched and reported as a duplicate: producing with an explicit id is idempotent.
-- An id given twice in one call is stored once, as its first occurrence; the later ones are
-- duplicates.
-- Within a priority, ready messages keep production order (LPUSH here, RPOP in fetch).
-- The envelope's timestamps come from this one clock.
-- An idle consumer parked in `waiting` is handed the call's first ready message directly
-- (push_to_parked in lib.lua: leased to it and published on its channel, one round trip
-- saved) when no other message is ready and the topic is not paused; the message is then
-- in flight, not pending.
-- At most one wake-up per call: 'p' when a pending list went from empty to non-empty,
-- otherwise 'd' when a new delayed message became the earliest one.
-- Returns: the positions (1 = the first message of the call) of the duplicates, in order;
-- empty when every message was stored. (Not one flag per message: a reply element costs
-- Redis and the client about as much as an argument.)
--
-- Malformed runs are an error, before anything is stored.
--
-- Cost: one message takes HSETNX and LPUSH (or ZADD). A batch takes a constant number of
-- Redis calls per chunk of up to 1000 messages -- HMGET for the duplicate check, one HSET of
-- the envelopes, one LPUSH per priority level used, one ZADD -- since a redis.call costs
-- more than the work it does, and builds the header of the envelopes it shares (same
-- priority and TTL, no delay) once. Runs keep the arguments at about two per message:
-- Redis reads, and Lua copies, every argument.

-- globals are table lookups; locals are registers
local ARGV, KEYS, tonumber, unpack = ARGV, KEYS, tonumber, unpack

local k = {
  messages = KEYS[1], delayed = KEYS[5], stats = KEYS[6], wake = KEYS[7], inflight = KEYS[8],
  waiting = KEYS[9],
}
local now = now_ms(ARGV[1])

-- The envelope's header, "<prio>|<produced_ms>|<expire_ms>|" (the body follows). TTL counts
-- from the moment the message becomes ready, so a long delay cannot use it up.
local function header(prio, delay, ttl)
  local expire = 0
  if ttl > 0 then expire = now + delay + ttl end
  return prio .. '|' .. now .. '|' .. expire .. '|'
end

-- True when the new ready message `id` went straight to a parked consumer: only the
-- first ready message of a call is offered, when nothing else is ready and the topic is not
-- paused (a consumer parks with free workers, and a push skips the queue).
local push_tried = false
local function handed(id, envelope)
  if push_tried then return false end
  push_tried = true
  return redis.call('EXISTS', k.waiting) == 1
    and redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) == 0
    and redis.call('EXISTS', KEYS[10]) == 0
    and push_to_parked(k, id, envelope, now)
end

if #ARGV == 7 and ARGV[2] == '1' then
  -- A single message (`send()`): HSETNX checks and stores it in one call.
  local id, prio, delay = ARGV[6], tonumber(ARGV[3]), tonumber(ARGV[4])
  local envelope = header(prio, delay, tonumber(ARGV[5])) .. ARGV[7]
  if redis.call('HSETNX', k.messages, id, envelope) == 0 then return { 1 } end
  if delay > 0 then
    redis.call('ZADD', k.delayed, due_in(delay), id)
    wake_if_earliest(k.delayed, k.wake, id)
  elseif not handed(id, envelope) and redis.call('LPUSH', KEYS[2 + prio], id) == 1 then
    redis.call('PUBLISH', k.wake, 'p')
  end
  redis.call('HINCRBY', k.stats, 'produced', 1)
  return {}
end

-- Per message: the ARGV index of its id (its body follows) and of its run's count (its
-- priority, delay and TTL follow).
local at, run_of, total = {}, {}, 0
do
  local a, nargs = 2, #ARGV
  while a <= nargs do
    local count = tonumber(ARGV[a])
    if not count or count < 1 or count % 1 ~= 0 or a + 3 + 2 * count > nargs then
      return redis.error_reply('produce.lua: malformed run at argument ' .. a)
    end
    for j = 0, count - 1 do
      total = total + 1
      at[total], run_of[total] = a + 4 + 2 * j, a
    end
    a = a + 4 + 2 * count
  end
end

-- A batch: the Redis calls are per chunk of up to 1000 messages (the most one unpack can
-- pass comfortably: Lua's limit is about 8000 values), not per message.
local CHUNK = 1000
local duplicates = {}  -- the reply: positions of the duplicates
local stored = 0
local woke = false
local new = {}         -- id -> 'ready' | 'delayed', for the ids this call stored
-- per priority argument: its pending list, and the headers of its ready messages by TTL
-- argument (the messages of a batch mostly share both, so each header is built once)
local levels = {}

-- Stores messages first..last (in argument order).
local function store(first, last)
  local ids, count = {}, 0
  for m = first, last do
    count = count + 1
    ids[count] = ARGV[at[m]]
  end
  local existing = redis.call('HMGET', k.messages, unpack(ids, 1, count))

  -- HSET arguments (id, envelope, ...), ready ids per list, ZADD arguments (due, id, ...)
  local fields, nfields, ready, delayed, ndelayed = {}, 0, {}, {}, 0
  local r = first - 1
  for n = 1, count do
    local id = ids[n]
    local run = run_of[first + n - 1]
    r = r + 1
    if existing[n] or new[id] then
      duplicates[#duplicates + 1] = r
    else
      local p, d, t = ARGV[run + 1], ARGV[run + 2], ARGV[run + 3]
      local level = levels[p]
      if level == nil then
        level = { list = KEYS[2 + tonumber(p)], headers = {} }
        levels[p] = level
      end
      local delay = 0
      if d ~= '0' then delay = tonumber(d) end
      local head
      if delay == 0 then
        head = level.headers[t]
        if head == nil then
          head = header(tonumber(p), 0, tonumber(t))
          level.headers[t] = head
        end
      else
        head = header(tonumber(p), delay, tonumber(t))
      end
      local envelope = head .. ARGV[at[first + n - 1] + 1]
      fields[nfields + 1], fields[nfields + 2] = id, envelope
      nfields = nfields + 2
      if delay > 0 then
        new[id] = 'delayed'
        delayed[ndelayed + 1], delayed[ndelayed + 2] = due_in(delay), id
        ndelayed = ndelayed + 2
      else
        new[id] = 'ready'
        if not handed(id, envelope) then
          local pushed = ready[level.list]
          if pushed == nil then
            ready[level.list] = { id }
          else
            pushed[#pushed + 1] = id
          end
        end
      end
      stored = stored + 1
    end
  end
  if nfields == 0 then return end

  redis.call('HSET', k.messages, unpack(fields, 1, nfields))
  -- in production order: the first pushed is the first popped. LPUSH returns the new
  -- length, which equals the number pushed exactly when the list was empty before.
  for list, pushed in pairs(ready) do
    if redis.call('LPUSH', list, unpack(pushed)) == #pushed and not woke then
      redis.call('PUBLISH', k.wake, 'p')
      woke = true
    end
  end
  if ndelayed > 0 then
    redis.call('ZADD', k.delayed, unpack(delayed, 1, ndelayed))
    -- one of them became the earliest exactly when the earliest now is one of them
    if not woke and new[redis.call('ZRANGE', k.delayed, 0, 0)[1]] == 'delayed' then
      redis.call('PUBLISH', k.wake, 'd')
      woke = true
    end
  end
end

for first = 1, total, CHUNK do
  store(first, math.min(first + CHUNK - 1, total))
end

if stored > 0 then redis.call('HINCRBY', k.stats, 'produced', stored) end
return duplicates
