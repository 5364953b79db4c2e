-- Put a failed job (ARGV[3] = seq) back to pending with fresh attempts.
-- Returns 'ok', 'missing', or the state it is in.
local seq = ARGV[3]
local state = redis.call('HGET', jobkey(seq), 'state')
if not state then return 'missing' end
if state ~= 'failed' then return state end
redis.call('ZREM', K_FAILED, member(seq))
redis.call('HSET', jobkey(seq), 'attempts', '0', 'run_at', NOW_S)
local key = redis.call('HGET', jobkey(seq), 'unique_key')
if key then redis.call('HSETNX', K_UNIQUE, key, seq) end
to_pending(seq)
wake()
return 'ok'
