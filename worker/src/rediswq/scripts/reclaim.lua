-- Put expired leases back (or dead-letter them). ARGV: max_attempts, limit.
-- Returns how many leases had expired.
return reclaim(now_ms(), tonumber(ARGV[1]), tonumber(ARGV[2]))
