-- Complete leases, only for their current holder.
-- ARGV: owner, then lease ids. Returns 1 per id that was still held by owner, else 0.
local flags = complete_from(ARGV[1], 2)
if redis.call('ZCARD', deadlines) == 0 and redis.call('LLEN', pending) == 0 then
  redis.call('PUBLISH', events, 'drained') -- waiting workers look again, and may stop
end
return flags
