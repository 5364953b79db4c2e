-- Enqueue jobs: ARGV[3..] in groups of six (payload, priority, max attempts,
-- has unique key '0'/'1', unique key, run at ms). Returns the job numbers;
-- a live job holding the unique key is returned instead of a new one.
local ids = {}
for i = 3, #ARGV, 6 do
  local payload, priority, max = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local keyed, ukey, run_at = ARGV[i + 3] == '1', ARGV[i + 4], ARGV[i + 5]
  local existing = keyed and redis.call('HGET', K_UNIQUE, ukey)
  if existing then
    ids[#ids + 1] = tonumber(existing)
  else
    local seq = tostring(redis.call('HINCRBY', K_STATS, 'seq', 1))
    local jk = jobkey(seq)
    local state = tonumber(run_at) > NOW and 'scheduled' or 'pending'
    redis.call('HSET', jk, 'payload', payload, 'state', state, 'priority', priority,
      'attempts', '0', 'max_attempts', max, 'created_at', NOW_S, 'run_at', run_at, 'token', '0')
    if keyed then
      redis.call('HSET', jk, 'unique_key', ukey)
      redis.call('HSET', K_UNIQUE, ukey, seq)
    end
    if state == 'scheduled' then
      redis.call('ZADD', K_SCHEDULED, run_at, member(seq))
    else
      redis.call('ZADD', K_PENDING, -tonumber(priority), member(seq))
    end
    ids[#ids + 1] = tonumber(seq)
  end
end
wake()
return ids
