-- Enqueue jobs: ARGV[3..] in groups of nine (payload, priority, max
-- attempts, has unique key '0'/'1', unique key, run at ms, and for a
-- follow-up its tree's root id, its parent's id and its depth, else three
-- empty strings). Returns {seq, 1} per new job, or {seq, 0} for the live
-- job holding the unique key, enqueued in its place.
local out = {}
for i = 3, #ARGV, 9 do
  local payload, priority, max = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local keyed, ukey, run_at = ARGV[i + 3] == '1', ARGV[i + 4], ARGV[i + 5]
  local root, parent, depth = ARGV[i + 6], ARGV[i + 7], ARGV[i + 8]
  local existing = keyed and redis.call('HGET', K_UNIQUE, ukey)
  if existing then
    out[#out + 1] = {tonumber(existing), 0}
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
    if root ~= '' then
      redis.call('HSET', jk, 'root', root, 'parent', parent, 'depth', depth)
    end
    if state == 'scheduled' then
      redis.call('ZADD', K_SCHEDULED, run_at, member(seq))
    else
      redis.call('ZADD', K_PENDING, -tonumber(priority), member(seq))
    end
    out[#out + 1] = {tonumber(seq), 1}
  end
end
wake()
return out
