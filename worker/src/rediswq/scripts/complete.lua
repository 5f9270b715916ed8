#!lua flags=allow-oom
-- Complete leases, only for their current holder.
-- ARGV: owner, request (see queue.py), then lease ids. Returns 1 per id that was still held by
-- owner, else 0.
-- Allowed over maxmemory: it deletes the leases' records, and writes only a counter and the
-- owner's reply memory, both of a bounded size, and one entry to the capped history.
-- Completing is how the workers free memory.
local owner, request = ARGV[1], ARGV[2]
check(pending, leases, deadlines, stats, replies)
local memory = replayed(owner, request)
if memory then
  remember(owner, request, memory) -- for the WAIT after it, as in lease.lua
  return split(memory)
end
local flags = {}
local kept = complete_from(owner, 3, flags)
if redis.call('ZCARD', deadlines) == 0 and redis.call('LLEN', pending) == 0 then
  notify('drained') -- waiting workers look again, and may stop
end
remember(owner, request, kept)
return flags
