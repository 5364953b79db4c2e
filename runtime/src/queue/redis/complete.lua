-- Record how attempts ended: ARGV[3..] in groups of seven (seq, token,
-- action done|retry|fail|release, failure kind, error, run again at ms,
-- log). A group whose token is not the job's current lease changes nothing
-- ('stale'). Returns per group: 'done', 'pending', 'scheduled', 'failed' or
-- 'stale'.
local out = {}
local woke = false
local done = 0
for i = 3, #ARGV, 7 do
  local seq, token, action, kind = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local err, again, log = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local jk = jobkey(seq)
  local st = redis.call('HMGET', jk, 'state', 'token', 'attempts', 'max_attempts', 'unique_key')
  local result
  if st[1] ~= 'running' or st[2] ~= token then
    result = 'stale'
  else
    redis.call('ZREM', K_RUNNING, member(seq))
    if action == 'done' then
      local key = st[5]
      if key and redis.call('HGET', K_UNIQUE, key) == seq then
        redis.call('HDEL', K_UNIQUE, key)
      end
      redis.call('DEL', jk, histkey(seq))
      done = done + 1
      result = 'done'
    elseif action == 'release' then
      redis.call('HINCRBY', jk, 'attempts', -1)
      redis.call('RPOP', histkey(seq))
      to_pending(seq)
      result = 'pending'
    else
      fail_attempt(seq, kind, err)
      redis.call('HSET', jk, 'log', log)
      if action == 'fail' or tonumber(st[3]) >= tonumber(st[4]) then
        to_failed(seq)
        result = 'failed'
      elseif tonumber(again) <= NOW then
        redis.call('HSET', jk, 'run_at', NOW_S)
        to_pending(seq)
        result = 'pending'
      else
        redis.call('HSET', jk, 'state', 'scheduled', 'run_at', again)
        redis.call('ZADD', K_SCHEDULED, again, member(seq))
        result = 'scheduled'
      end
    end
    if result == 'pending' or result == 'scheduled' then woke = true end
  end
  out[#out + 1] = result
end
if done > 0 then redis.call('HINCRBY', K_STATS, 'done', done) end
if woke then wake() end
return out
