-- One job's record (ARGV[3] = seq), or nil.
if redis.call('EXISTS', jobkey(ARGV[3])) == 0 then return false end
return record(ARGV[3])
