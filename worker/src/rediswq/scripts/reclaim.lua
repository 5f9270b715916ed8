#!lua flags=allow-oom
-- Put expired leases back (or dead-letter them). ARGV: max_attempts, limit.
-- Returns how many leases had expired. Safe to run twice: the second run finds fewer.
-- Allowed over maxmemory: like lease.lua, it moves items back and adds none but an entry
-- per lease to the capped history.
check(pending, leases, deadlines, retries, failed, stats, history)
return reclaim(now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
