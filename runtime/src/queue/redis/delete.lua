-- Remove a job that is not running (ARGV[3] = seq). Returns 'deleted',
-- 'missing' or 'running'.
local seq = ARGV[3]
local state = redis.call('HGET', jobkey(seq), 'state')
if not state then return 'missing' end
if state == 'running' then return 'running' end
local m = member(seq)
redis.call('ZREM', K_PENDING, m)
redis.call('ZREM', K_SCHEDULED, m)
redis.call('ZREM', K_FAILED, m)
release_unique(seq)
redis.call('DEL', jobkey(seq), histkey(seq))
return 'deleted'
