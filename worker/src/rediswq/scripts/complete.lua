-- Complete leases, only for their current holder.
-- ARGV: owner, then lease ids. Returns 1 per id that was still held by owner, else 0.
return complete_from(ARGV[1], 2)
