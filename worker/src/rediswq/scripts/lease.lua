#!lua flags=allow-oom
-- One step of a worker: hand in finished leases, reclaim expired ones, lease up to `count` items.
-- ARGV: owner, request (see queue.py), lease_ms, count, max_attempts, require_seal ("1": any
-- seal, "0": none needed, "=<run>": the seal of that run, see runs.py), reclaim ("1": put expired
-- leases back first; callers ask now and then, not every step), then the ids to complete.
-- Returns {state, a completed flag per handed-in id, then id, attempt, item per new lease}, where
-- state is "leased", "pending" (count was 0), "wait" (nothing pending, but leases are out or
-- failed items wait for their retry),
-- "unsealed" (nothing pending, nothing out, not sealed yet; for a run: no seal at all),
-- "other-run" (sealed for another run than the caller's: lease nothing) or "drained".
-- Allowed over maxmemory: it moves items (pending -> leased -> gone or back) and adds none; an
-- item in flight costs ~100 bytes more than a pending one, for at most workers x prefetch items,
-- and the drain it drives is what frees the memory (docs/how-it-works.md, "When Redis is full").
-- A hand-in adds an entry to the history, a stream capped near 10,000 attempts (~1 MB).
local owner, request, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local count, require_seal = tonumber(ARGV[4]), ARGV[6] ~= '0'
local run = require_seal and ARGV[6] ~= '1' and string.sub(ARGV[6], 2)
local first_done = 8

-- Every check before the first write: a WRONGTYPE error after one would leave the step half
-- done. A check costs ~0.5 us a step, so the reads the step needs anyway check what they read
-- (replies, pending, retries, sealed; leases by HMGET in complete_from, stats by HINCRBY, the
-- first write there), and seq by INCRBY, the step's first write (an id reserved by a step that
-- then fails is only a gap). check() covers the rest; deadlines, which only the writes read,
-- by ZCARD: Redis refuses it on another type, at about half the cost of check() a step (and
-- its count tells when to unpack, see UNPACK_AT).
local reclaiming = ARGV[7] == '1'
local out = redis.call('ZCARD', deadlines)
if #ARGV < first_done then
  check(leases)
end
if reclaiming then
  check(stats, failed, delayed, seq, history)
end

-- The same request again: the same state and flags, and the leases it took that the owner
-- still holds, rebuilt from their records (a lease reclaimed meanwhile is no longer its).
local memory, known = replayed(owner, request)
if memory then
  -- The memory written again, unchanged: a replay comes on a new connection, whose WAIT
  -- (REPLICATED_HANDINS) covers only its own writes, and would return before the replicas
  -- hold the first run's.
  remember(owner, request, memory)
  local state, flags, ids = string.match(memory, '^([%a-]+) ([^ ]*) (.*)$')
  local reply = split(flags)
  table.insert(reply, 1, state)
  for _, id in ipairs(split(ids)) do
    local record = owned(owner, id)
    if record then
      local _, attempt, item = parse(record)
      reply[#reply + 1], reply[#reply + 2], reply[#reply + 3] = id, attempt, item
    end
  end
  return reply
end

local available = redis.call('LLEN', pending)
local retried = redis.call('HLEN', retries) > 0
local sealed_for = run and redis.call('GET', sealed)
local other_run = run and sealed_for ~= run
local take = other_run and 0 or math.min(count, available)
if retried and not reclaiming then -- tested here: a call a step costs ~500 instructions
  take = together(take)
end
-- As sent, when all of it is taken: not a number written out again (see text()).
local take_text = take == count and ARGV[4] or text(take)
local first_id
if take > 0 and not reclaiming then
  first_id = redis.call('INCRBY', seq, take_text) - take
end

local reply = {''}
local flags, completed = complete_from(owner, first_done, reply)
local handed_in = #reply - 1

local now = now_ms()
if reclaiming then
  reclaim(now, tonumber(ARGV[5]), 100)
  promote(now, 100)
  -- Items may have come back: lease them now rather than after a poll.
  take = other_run and 0 or math.min(count, redis.call('LLEN', pending))
  retried = redis.call('EXISTS', retries) == 1
  if retried then
    take = together(take)
  end
  take_text = take == count and ARGV[4] or text(take)
  first_id = take > 0 and redis.call('INCRBY', seq, take_text) - take
  out, completed = redis.call('ZCARD', deadlines), 0
end

-- The new leases' ids, as the memory keeps them.
local ids, taken = '', 0
local held = out - completed
local unpacking = held < UNPACK_AT and held + take >= UNPACK_AT
if take == 1 and not unpacking then
  -- One item, as every step at PREFETCH=1 takes: the batch's writes below without its tables
  -- (see complete_one in common.lua). Its lines are written out here, not shared in a function:
  -- a call an item cost the batch 2% of its server's work at PREFETCH=64.
  local item = redis.call('LPOP', pending)
  local id = first_id + 1
  local attempt = (retried and pop_attempts(item) or 0) + 1
  ids = string.format('%d', id)
  redis.call('HSET', leases, ids, owner .. '\n' .. text(attempt) .. '\n' .. item)
  redis.call('ZADD', deadlines, string.format('%d', now + lease_ms), ids)
  local r = #reply
  reply[r + 1], reply[r + 2], reply[r + 3] = id, attempt, item
  taken = 1
elseif take > 0 then
  -- Batched writes: a prefetch of k items costs a handful of calls, not a few per item.
  local items = redis.call('LPOP', pending, take_text)
  local prefix = owner .. '\n'
  -- As text once, not by each of the ZADD's k numbers (see text()).
  local deadline = string.format('%d', now + lease_ms)
  local o = unpacking and 2 or 0 -- the unpacking member goes first (see unpack_with)
  local records, deadline_args, r = {}, {}, #reply
  local texts = id_texts(first_id, #items) -- once: the memory and both writes take them
  for i, item in ipairs(items) do
    local attempt = (retried and pop_attempts(item) or 0) + 1
    records[o + 2 * i - 1] = texts[i]
    records[o + 2 * i] = prefix .. text(attempt) .. '\n' .. item
    deadline_args[o + 2 * i - 1] = deadline
    deadline_args[o + 2 * i] = texts[i]
    reply[r + 1], reply[r + 2], reply[r + 3] = first_id + i, attempt, item
    r = r + 3
  end
  if unpacking then
    unpack_with(records, deadline_args, deadline)
  end
  redis.call('HSET', leases, unpack(records))
  redis.call('ZADD', deadlines, unpack(deadline_args))
  if unpacking then
    unpacked()
  end
  ids, taken = table.concat(texts, ','), #items
end
if taken > 0 then
  reply[1] = 'leased'
elseif other_run then
  reply[1] = sealed_for and 'other-run' or 'unsealed'
elseif redis.call('LLEN', pending) > 0 then
  reply[1] = 'pending'
elseif redis.call('ZCARD', deadlines) > 0 or redis.call('EXISTS', delayed) == 1 then
  reply[1] = 'wait'
elseif require_seal and redis.call('EXISTS', sealed) == 0 then
  reply[1] = 'unsealed'
else
  reply[1] = 'drained'
  notify('drained')
end
-- A step that changed nothing is safe to run again; a worker that only waited for the seed
-- leaves no memory behind.
if known or handed_in > 0 or taken > 0 then
  remember(owner, request, reply[1] .. ' ' .. flags .. ' ' .. ids)
end
return reply
