#!lua
-- Put back what a superseded run left (moved aside by seal.lua): behind what is pending now, each
-- copy with its attempt count. KEYS after the queue's: the run's record, what it left undone and
-- their attempt counts (keys.py, run_keys). ARGV: run id, token (one per `runs restore` call),
-- keep_seconds.
-- Returns {"restored", n} (also to a replay of the same call), {"already", n} or {"none", 0}.
local info, aside, aside_retries = unpack(KEYS, OWN, OWN + 2)
local token, keep = ARGV[2], tonumber(ARGV[3])
if redis.call('HGET', info, 'restore_token') == token then
  -- Writing the token again changes nothing, but the WAIT after a write of this connection
  -- waits for the replicas to hold everything up to it, the first call's restore included.
  redis.call('HSET', info, 'restore_token', token)
  return {'restored', tonumber(redis.call('HGET', info, 'restored'))}
end
local n = redis.call('LLEN', aside)
if n == 0 then
  local restored = redis.call('HGET', info, 'restored')
  return restored and {'already', tonumber(restored)} or {'none', 0}
end
kind_of[info], kind_of[aside], kind_of[aside_retries] = 'hash', 'list', 'hash'
check(pending, retries, info, aside, aside_retries)
if redis.call('EXISTS', pending) == 0 and redis.call('EXISTS', retries) == 0 then
  redis.call('RENAME', aside, pending)
  if redis.call('EXISTS', aside_retries) == 1 then
    redis.call('RENAME', aside_retries, retries)
  end
else
  -- A value's counts are a stack whose top belongs to its first copy in the list (common.lua).
  -- The restored copies come after every copy pending now, so their counts go under the
  -- current stack, with a 0 for each copy pending now that has no count of its own.
  local stacks = redis.call('HGETALL', aside_retries)
  for i = 1, #stacks, 2 do
    local item, moved = stacks[i], stacks[i + 1]
    local here = redis.call('HGET', retries, item) or ''
    local copies = #redis.call('LPOS', pending, item, 'COUNT', 0)
    local uncounted = copies - select(2, string.gsub(here, '%d+', ''))
    local parts = {moved}
    for _ = 1, uncounted do
      parts[#parts + 1] = '0'
    end
    if here ~= '' then
      parts[#parts + 1] = here
    end
    redis.call('HSET', retries, item, table.concat(parts, ' '))
  end
  for start = 0, n - 1, 1000 do
    redis.call('RPUSH', pending, unpack(redis.call('LRANGE', aside, start, start + 999)))
  end
  redis.call('DEL', aside, aside_retries)
end
redis.call('HSET', info, 'restored', n, 'restore_token', token)
redis.call('EXPIRE', info, keep) -- now only a record, like any run that ended
notify('pending')
return {'restored', n}
