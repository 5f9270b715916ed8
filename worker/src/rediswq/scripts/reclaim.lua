#!lua flags=allow-oom
-- Put expired leases back (or dead-letter them). ARGV: max_attempts, limit.
-- Returns how many leases had expired. Safe to run twice: the second run finds fewer.
-- Allowed over maxmemory: like lease.lua, it moves items back and adds none.
check(pending, leases, deadlines, retries, failed, stats)
return reclaim(now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
