-- Prepended to every script, and defined once in the function library (see scripts.py), so
-- each script stays one atomic step while sharing the record format and the put-back rule.
-- Before it, scripts.py declares the keys (pending, leases, ..., in the order of keys.py) and
-- their Redis types (see keys.py); nothing here may read a key's name before a call binds it.

-- Waiting workers listen on "<pending>:events" (EVENTS_SUFFIX, from keys.py), so they need not
-- poll fast: see events.py.
-- A wake-up is a courtesy: a user whose ACL allows no channels still works (by polling), and a
-- refused PUBLISH must not abort a step after its first write.
local function notify(message)
  redis.pcall('PUBLISH', pending .. EVENTS_SUFFIX, message)
end

-- Every script calls this with each key it may write, before its first write: Redis does not
-- roll back, so a WRONGTYPE error after a write would leave a step half done (items popped
-- and never leased).
local function check(...)
  for _, key in ipairs({...}) do
    local kind = redis.call('TYPE', key).ok
    local want = kind_of[key] or layout_kind(key)
    if kind ~= 'none' and kind ~= want then
      return error({err = 'WRONGTYPE ' .. key .. ' holds a ' .. kind .. ', not a ' .. want})
    end
  end
end

-- Lua turns a number into text (in `..`, or as a command's argument) or back at 0.5-1 us, as
-- much as a whole Redis command, so the steps keep ids as the text they came in and write small
-- counts, nearly always 1, from here.
local function text(n)
  return n == 1 and '1' or string.format('%d', n)
end

-- The ids first + 1 .. first + n as text. string.format took 0.4-0.7 us an id here, the lease
-- step's largest cost a lease; ids in a row share all but their last two digits, so a batch
-- formats those once a hundred ids and takes the last two from a table (~0.1 us an id), made
-- at the first batch (in the library: once, as an upvalue it keeps across calls).
local TWO_DIGITS
local function id_texts(first, n)
  local texts = {}
  if n < 8 then
    for i = 1, n do
      texts[i] = string.format('%d', first + i)
    end
    return texts
  end
  if not TWO_DIGITS then
    TWO_DIGITS = {}
    for i = 0, 99 do
      TWO_DIGITS[i] = string.format('%02d', i)
    end
  end
  local i, id = 1, first + 1
  while i <= n do
    local high = math.floor(id / 100)
    local head, low = high > 0 and string.format('%d', high), id - 100 * high
    while low < 100 and i <= n do
      texts[i] = head and head .. TWO_DIGITS[low] or string.format('%d', low)
      i, low = i + 1, low + 1
    end
    id = 100 * (high + 1)
  end
  return texts
end

-- Replays (see queue.py): the reply essentials of `owner`'s last request, if `request` (its id
-- as sent) is that one (a copy that redis-py sent again), or an error if `request` is older (a
-- copy that reached Redis late, whose caller has moved on); nil for a new request. The second
-- value says whether the owner has a memory at all. Ids are compared as text: digits without
-- leading zeros, so the longer is the larger, and of equal length the later in order.
local function replayed(owner, request)
  local memory = redis.call('HGET', replies, owner)
  if not memory then
    return nil, false
  end
  local space = string.find(memory, ' ', 1, true)
  local last = string.sub(memory, 1, space - 1)
  if request == last then
    return string.sub(memory, space + 1), true
  elseif #request > #last or (#request == #last and request > last) then
    return nil, true
  end
  return error({err = 'STALE request ' .. request .. ' of ' .. owner .. ' came after ' .. last})
end

-- The request id is kept as sent (ARGV[2] of every script that remembers), never as a number:
-- ids are about 1e15, which Lua would print as 1.7e+15.
local function remember(owner, request, essentials)
  redis.call('HSET', replies, owner, request .. ' ' .. essentials)
end

-- Numbers (flags, ids, outcomes) as the text `remember` keeps, and back.
local function joined(numbers)
  return table.concat(numbers, ',')
end

local function split(text)
  local numbers = {}
  for number in string.gmatch(text, '-?%d+') do
    numbers[#numbers + 1] = tonumber(number)
  end
  return numbers
end

-- Deadlines come from the server's clock, never a worker's.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A lease record is "<owner>\n<attempt>\n<item>"; the item may hold any bytes.
local function parse(record)
  local owner, attempt, item = string.match(record, '^([^\n]*)\n(%d+)\n(.*)$')
  return owner, tonumber(attempt), item
end

-- The record of lease `id` if `owner` holds it, else nil.
local function owned(owner, id)
  local record = redis.call('HGET', leases, id)
  -- A find from the start, not a sub to compare: no string made from the record. It scans the
  -- record only when another holds the lease, as after it expired and was leased again.
  if record and string.find(record, owner .. '\n', 1, true) == 1 then
    return record
  end
  return nil
end

-- Each attempt's end, for `rediswq history` (history.py), in the step that decides it: it
-- outlives the worker's pod and log. The entry's id is the server's time. An attempt alone is
-- an entry of the fields `item`, `attempt`, `outcome` and `worker`, the same in every such
-- entry, which a stream stores once a node. The ends of several leases in one step, with one
-- outcome and one worker (a hand-in of a batch), are one entry: `outcome`, `worker`, then each
-- lease's id and "<attempt>\n<item>". A step handing in 64 leases used to add 64 entries: 14,000
-- instructions of the server a lease (callgrind, Redis 7.0), against 1,700 for one. Capped near
-- HISTORY_MAX attempts: an entry of n trims the stream to HISTORY_MAX / n entries (exactly
-- HISTORY_MAX attempts when the steps end alike, a few times more at worst when sizes mix), and
-- `~` trims whole nodes, at a cost per call of the add alone.
local HISTORY_MAX = 10000
local HISTORY_MAX_TEXT = HISTORY_MAX .. '' -- in the library: once, as it loads (no string.* then)
local function log_attempt(item, attempt, outcome, owner)
  redis.call('XADD', history, 'MAXLEN', '~', HISTORY_MAX_TEXT, '*', 'item', item, 'attempt',
    attempt, 'outcome', outcome, 'worker', owner)
end

-- `ends` is {id, "<attempt>\n<item>", ...}, of two leases or more.
local function log_ends(outcome, owner, ends)
  local cap = string.format('%d', math.ceil(2 * HISTORY_MAX / #ends))
  redis.call('XADD', history, 'MAXLEN', '~', cap, '*', 'outcome', outcome, 'worker', owner,
    unpack(ends))
end

-- Redis keeps a small hash or sorted set packed (a listpack: by default up to 512 fields of a
-- hash, 128 members of a sorted set, none longer than 64 bytes), where each insert or lookup
-- scans the whole key. With the 64-128 leases of two workers at prefetch 64, the deadlines'
-- ZADD alone took 3.5 us a lease, a third of the step's server time; unpacked, a lookup costs
-- the same at any size, and a key stays unpacked until it is deleted, however small it gets.
-- So the step that takes the leases out past UNPACK_AT gives the leases and the deadlines a
-- member too long to pack and takes it out again: nobody else sees it. A server that packs
-- longer members (a larger hash-max-listpack-value) only stays slower. Memory: ~90 bytes more
-- a lease in the deadlines, for at most 128 leases (past that Redis unpacks them itself); the
-- leases' records are mostly longer than 64 bytes, which unpacks that hash anyway.
local UNPACK_AT = 32
local UNPACKING = 'not a lease: it turns the key from a packed into a plain hash or sorted set '
  .. 'and goes in the same step (see UNPACK_AT in common.lua)'

-- Put the unpacking member in front of the lease step's HSET and ZADD arguments (left free).
local function unpack_with(records, deadline_args, deadline)
  records[1], records[2] = UNPACKING, ''
  deadline_args[1], deadline_args[2] = deadline, UNPACKING
end

local function unpacked()
  redis.call('HDEL', leases, UNPACKING)
  redis.call('ZREM', deadlines, UNPACKING)
end

local function forget(id)
  redis.call('HDEL', leases, id)
  redis.call('ZREM', deadlines, id)
end

-- Items that go back to the pending list keep their attempt count. Copies of one value are
-- interchangeable, so a stack of counts per value (in `retries`) is enough, and duplicates stay legal.
-- A count written as "<n>!" is of a copy whose lease expired (see together()).
local function push_attempts(item, attempts)
  local stack = redis.call('HGET', retries, item)
  redis.call('HSET', retries, item, stack and (stack .. ' ' .. attempts) or tostring(attempts))
end

local function pop_attempts(item)
  local stack = redis.call('HGET', retries, item)
  if not stack then
    return 0
  end
  local rest, top = string.match(stack, '^(.-) ?(%d+)!?$')
  if rest == '' then
    redis.call('HDEL', retries, item)
  else
    redis.call('HSET', retries, item, rest)
  end
  return tonumber(top)
end

-- How many of the `take` items at the head to lease together: one if the first came back because
-- its lease expired (its count ends in "!"). A worker killed by one item (the OOM killer, a crash
-- in C) loses its whole batch, which, leased together again, would follow that item to the dead
-- letters, an attempt charged to each at every death; leased one at a time, only that item dies
-- again. A failure its worker lived through, or an item given back, is not suspect: it is leased
-- in a batch. The top of a value's stack is its first copy's, and put-back copies wait at the
-- head (put_back), so the first item tells. Asked only while some item has a count (lease.lua's
-- `retried`), before the lease step reserves the ids.
local function together(take)
  if take > 1 then
    local stack = redis.call('HGET', retries, redis.call('LINDEX', pending, 0))
    if stack and string.sub(stack, -1) == '!' then
      return 1
    end
  end
  return take
end

-- Back to the head of the queue, or to the dead letters once `max_attempts` are spent.
-- Returns 1 if the item was dead-lettered.
local function put_back(item, attempts, max_attempts, expired)
  if attempts >= max_attempts then
    redis.call('RPUSH', failed, item)
    redis.call('HINCRBY', stats, 'failed', 1)
    return 1
  end
  redis.call('LPUSH', pending, item)
  notify('pending')
  -- Pushed even when 0: put-back copies sit at the head in the order of this stack, so each
  -- copy leased next takes its own count, not another copy's.
  push_attempts(item, expired and attempts .. '!' or attempts)
  return 0
end

-- Failed items whose retry delay has passed go back to the head of the queue, earliest first.
-- A delayed entry is "<lease id>\n<attempt>\n<item>": the id keeps copies of one item apart.
local function promote(now, limit)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  for i = #due, 1, -1 do
    local _, attempt, item = parse(due[i])
    put_back(item, attempt, math.huge)
    redis.call('ZREM', delayed, due[i])
  end
end

-- The writes of completing `n` leases (ids `...`) once every read is done. XLEN first: a
-- wrong-typed history or stats key then fails the step before it changes anything (HINCRBY
-- checks stats as its first write).
local function mark_done(n, ...)
  redis.call('XLEN', history)
  redis.call('HINCRBY', stats, 'done', text(n))
  redis.call('HDEL', leases, ...)
  redis.call('ZREM', deadlines, ...)
end

-- The history entry of lease `record`'s end. Its owner's length is known (`from`: where the
-- attempt starts), so plain finds cut it, cheaper than a pattern that scans the item.
local function log_record(record, from, outcome, owner)
  local cut = string.find(record, '\n', from, true)
  log_attempt(string.sub(record, cut + 1), string.sub(record, from, cut - 1), outcome, owner)
end

-- Complete lease `id` if `owner` holds it, as complete_from does for several, but without the
-- tables of a batch (HMGET's reply, the ids and records held), which Redis's Lua allocates and
-- collects: a worker at PREFETCH=1 hands in one lease a step. With lease.lua's one-item path,
-- it took the server's work of such a step from 192,000 instructions to 168,000 (callgrind,
-- Redis 7.0).
local function complete_one(owner, id, reply)
  local lease = owned(owner, id)
  if not lease then
    reply[#reply + 1] = 0
    return '0', 0
  end
  reply[#reply + 1] = 1
  mark_done(1, id)
  log_record(lease, #owner + 2, 'done', owner)
  return '1', 1
end

-- Complete the leases ARGV[first..] that `owner` holds: one HMGET/HDEL/ZREM for the lot, and
-- one history entry. Appends a flag per id to `reply`: 1 completed, 0 not held (expired and
-- maybe re-leased by another). Returns the flags as `remember` keeps them, written as text from
-- the start (see text()), and how many leases it completed.
local function complete_from(owner, first, reply)
  local last = #ARGV
  if first > last then
    return '', 0
  elseif first == last then
    return complete_one(owner, ARGV[first], reply)
  end
  local records = redis.call('HMGET', leases, unpack(ARGV, first, last))
  local prefix = owner .. '\n'
  local mine, held, seen, n, r, count = {}, {}, {}, 0, #reply, last - first + 1
  for i = 1, count do
    local id, lease = ARGV[first + i - 1], records[i]
    if lease and not seen[id] and string.find(lease, prefix, 1, true) == 1 then
      seen[id] = true
      n = n + 1
      mine[n] = id
      held[n] = lease
      reply[r + i] = 1
    else
      reply[r + i] = 0
    end
  end
  if n == 1 then
    mark_done(1, mine[1])
    log_record(held[1], #prefix + 1, 'done', owner)
  elseif n > 1 then
    mark_done(n, unpack(mine))
    local ends = {}
    for i = 1, n do -- "<attempt>\n<item>" after the owner's line
      ends[2 * i - 1], ends[2 * i] = mine[i], string.sub(held[i], #prefix + 1)
    end
    log_ends('done', owner, ends)
  end
  if n == count then -- all still held, as nearly always
    return string.rep('1,', n - 1) .. '1', n
  end
  local texts = {}
  for i = 1, count do
    texts[i] = reply[r + i] == 1 and '1' or '0'
  end
  return table.concat(texts, ','), n
end

-- Expired leases go back (or to the dead letters); at most `limit` per call keeps a call short.
local function reclaim(now, max_attempts, limit)
  local expired = redis.call('ZRANGEBYSCORE', deadlines, '-inf', '(' .. now, 'LIMIT', 0, limit)
  for i = #expired, 1, -1 do
    local lease = redis.call('HGET', leases, expired[i])
    forget(expired[i])
    if lease then
      local owner, attempt, item = parse(lease)
      local dead = put_back(item, attempt, max_attempts, true) == 1
      if dead then -- the dead letter's record (deadletter.py)
        redis.call('HSET', failures, item, cjson.encode({attempts = attempt, time = now / 1000,
          error = 'LeaseExpired: its lease ran out (the worker died, hung or lost Redis)',
          worker = 'session ' .. owner, traceback = ''}))
      end
      redis.call('HINCRBY', stats, 'reclaimed', 1)
      log_attempt(item, attempt, dead and 'expired, dead-lettered' or 'expired', owner)
    end
  end
  return #expired
end


-- The named dead letters ARGV[first..] (an item named twice must be there twice): nil if all
-- are there, else {"missing", items...} for the reply.
local function missing_dead_letters(first)
  local wanted, missing = {}, {'missing'}
  for i = first, #ARGV do
    wanted[ARGV[i]] = (wanted[ARGV[i]] or 0) + 1
  end
  for item, n in pairs(wanted) do
    if #redis.call('LPOS', failed, item, 'COUNT', n) < n then
      missing[#missing + 1] = item
    end
  end
  return #missing > 1 and missing or nil
end

-- Drop one copy of each named dead letter ARGV[first..], and the record of an item with no copy
-- left; returns how many were named.
local function drop_dead_letters(first)
  for i = first, #ARGV do
    redis.call('LREM', failed, 1, ARGV[i])
  end
  for i = first, #ARGV do
    if not redis.call('LPOS', failed, ARGV[i]) then
      redis.call('HDEL', failures, ARGV[i])
    end
  end
  return #ARGV - first + 1
end
