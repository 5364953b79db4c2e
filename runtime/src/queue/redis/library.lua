-- The queue's function library, loaded once per server (FUNCTION LOAD) and
-- called with FCALL. The host puts a first line naming the library after a
-- hash of this text, and defines NAME as that name: functions are
-- registered as NAME .. '_' .. <function>, so two versions of the runtime
-- sharing a server each call their own.
--
-- The job functions get one key, the queue's base <prefix>{<queue>}, and
-- name the queue's other keys from it (all in its cluster slot); `tree`,
-- `registry` and `bucket` get the one key they keep. A queue's keys:
--   <base>:pending    zset, score -priority, member zero-padded seq (FIFO
--                     within a priority: equal scores sort by member)
--   <base>:scheduled  zset, score due time (ms)
--   <base>:running    zset, score lease expiry (ms)
--   <base>:failed     zset, score time of failure (ms)
--   <base>:unique     hash, unique key -> seq of the live job holding it
--   <base>:stats      hash: seq (last job number), done (jobs finished),
--                     on (set by the first dispatch since it was new),
--                     paused (set while the queue is paused: no claim
--                     takes its jobs)
--   <base>:wake       list: a marker wakes one blocked worker
-- and a job's record, as plain strings so a batch of jobs is read (MGET)
-- and written (MSET) in one command, not one per job:
--   <base>:job:<seq>    string, what never changes, encoded by the host and
--                       never read here
--   <base>:job:<seq>:m  string, what does: state|attempts|token|lease
--     expiry|run at|attempt started|priority|max attempts|flags (lease and
--     started empty unless running; flags: u if it has a unique key, f if
--     an attempt failed, so the rest is read only when there is some)
--   <base>:job:<seq>:x  hash, only if needed: u its unique key; k, e, g the
--     last failed attempt's kind, reason and log; tree_jobs on a tree's
--     root, its count (see `tree`)
--   <base>:job:<seq>:h  list, one "n|started|ended:kind|outcome" entry per
--     failed attempt; the running one is in m, and an attempt that ends
--     done leaves none (the record goes). The kind (a failure kind's
--     snake_case name) sits in a field only the host writes, so no outcome
--     text can be read as one; entries from before kinds were kept have a
--     bare "ended".
-- ARGV[1] is always now (ms, from the caller's clock: the conformance suite
-- runs on a manual one).
--
-- `mark`, `due` and `settle` get the due index's key <prefix>{@due}: the
-- queues that may have work, so a worker serving every queue finds work
-- without asking each queue (all in that key's slot):
--   <due>        zset, member a queue's written name, score when it may
--                next have work (ms): no later than its first pending job,
--                due time or lease expiry
--   <due>:marks  hash, queue -> times marked: a settle that has not seen
--                the latest mark changes nothing
--   <due>:wake   list: a marker wakes one waiting worker
-- A queue call that moves its queue's next work earlier returns the new
-- time for the caller to mark; the index is a hint, and a worker serving
-- every queue repairs it from the queues themselves now and then.

local MUT = '^(%l+)|(%d+)|(%d+)|(%d*)|(%d+)|(%d*)|(%-?%d+)|(%d+)|(%l*)$'
-- Just the state, the token and the flags, for the fencing check.
local FENCE = '^(%l+)|%d+|(%d+)|.*|(%l*)$'
-- A claim's reading of a pending job: attempts, token, run at, and the rest
-- as it stands (priority|max attempts|flags; only flags hold letters). MUT,
-- FENCE, TAKE and the changing part `claim` writes all follow the field
-- order of `mut`: a field added there is added to each.
local TAKE = '^%l+|(%d+)|(%d+)|%d*|(%d+)|%d*|(%-?%d+|%d+|%l*)$'

local function mut(st, a, t, l, r, b, p, x, fl)
  return st .. '|' .. a .. '|' .. t .. '|' .. l .. '|' .. r .. '|' .. b .. '|' .. p .. '|' .. x .. '|' .. fl
end

local function has(flags, flag) return string.find(flags, flag, 1, true) ~= nil end

-- A member no job has (not digits), longer than zset-max-listpack-value
-- (64 by default) is set to in practice, and short enough that the two
-- commands carrying it cost little in the AOF and on replicas; made at the
-- first claim, since loading has no `string`.
local skiplist_member

-- A job's seq (a decimal string) as its member in the state indexes, and
-- back; by string work alone, as number formatting costs more here. The
-- zeros are written out (loading has no `string`), so a member is one new
-- string.
local ZEROS = {[0] = '', '0', '00', '000', '0000', '00000', '000000',
  '0000000', '00000000', '000000000', '0000000000', '00000000000',
  '000000000000', '0000000000000', '00000000000000', '000000000000000',
  '0000000000000000', '00000000000000000', '000000000000000000',
  '0000000000000000000', '00000000000000000000'}
local function member(seq) return ZEROS[20 - #seq] .. seq end
local function seq_of(m) return string.match(m, '^0*(%d+)$') or m end

-- Calls `cmd` with `list` appended (after `key`, if given), in pieces:
-- unpack is bounded by Lua's C stack. Pieces of 1000 keep pairs whole.
local function batched(cmd, key, list)
  for i = 1, #list, 1000 do
    if key then
      redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
    else
      redis.call(cmd, unpack(list, i, math.min(i + 999, #list)))
    end
  end
end

-- MGET of any number of keys: false for each missing one (or one that is
-- not a string).
local function mget(keys)
  local out = {}
  for i = 1, #keys, 1000 do
    local part = redis.call('MGET', unpack(keys, i, math.min(i + 999, #keys)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

-- One marker at most: a woken worker that leaves work behind wakes the next.
local function wake(base)
  local key = base .. ':wake'
  if redis.call('LLEN', key) == 0 then redis.call('RPUSH', key, '1') end
end

-- When the queue at `base` may next have work: now if a job is pending,
-- else its first due time or lease expiry; nil if it has no jobs to run
-- or is paused.
local function next_due(base, now)
  if redis.call('HEXISTS', base .. ':stats', 'paused') == 1 then return nil end
  if redis.call('ZCARD', base .. ':pending') > 0 then return now end
  local next_at
  for _, key in ipairs({base .. ':scheduled', base .. ':running'}) do
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if first[2] then
      local at = tonumber(first[2])
      if not next_at or at < next_at then next_at = at end
    end
  end
  return next_at
end

-- The time to mark the queue due at, if it moved earlier than `before`
-- (its next work before the change), or -1.
local function moved(base, now, before)
  local after = next_due(base, now)
  if after and (not before or after < before) then return after end
  return -1
end

local function release_unique(base, seq, flags)
  if not has(flags, 'u') then return end
  local key = redis.call('HGET', base .. ':job:' .. seq .. ':x', 'u')
  if key and redis.call('HGET', base .. ':unique', key) == seq then
    redis.call('HDEL', base .. ':unique', key)
  end
end

-- Every key of a job's record; with its flags known, only those it has
-- (`:h` exists only once an attempt failed).
local function record_keys(jk, list, flags)
  list[#list + 1] = jk
  list[#list + 1] = jk .. ':m'
  list[#list + 1] = jk .. ':x'
  if not flags or has(flags, 'f') then list[#list + 1] = jk .. ':h' end
end

-- Ends a job's running attempt (changing part `f`) with a failure: its
-- entry in the history, its kind and reason (and `log`, if given) on the
-- record. Then to failed (on the last attempt, or if `give_up`), or back
-- to pending, or scheduled at `again` if that is later than now; with no
-- `again`, back to pending keeping its run-at time (a lease taken back).
-- Returns the new state.
local function end_attempt(base, seq, now, now_s, f, kind, reason, log, again, give_up)
  local jk = base .. ':job:' .. seq
  local _, a, t, _, r, b, p, x, fl = string.match(f, MUT)
  redis.call('RPUSH', jk .. ':h', a .. '|' .. b .. '|' .. now_s .. ':' .. kind .. '|' .. reason)
  if not has(fl, 'f') then fl = fl .. 'f' end
  local m = member(seq)
  local state, nm
  if give_up or tonumber(a) >= tonumber(x) then
    state, nm = 'failed', mut('failed', a, t, '', r, '', p, x, fl)
    redis.call('ZADD', base .. ':failed', now, m)
    release_unique(base, seq, fl)
  elseif not again or tonumber(again) <= now then
    state, nm = 'pending', mut('pending', a, t, '', again and now_s or r, '', p, x, fl)
    redis.call('ZADD', base .. ':pending', -tonumber(p), m)
  else
    state, nm = 'scheduled', mut('scheduled', a, t, '', again, '', p, x, fl)
    redis.call('ZADD', base .. ':scheduled', again, m)
  end
  redis.call('SET', jk .. ':m', nm)
  if log then
    redis.call('HSET', jk .. ':x', 'k', kind, 'e', reason, 'g', log)
  else
    redis.call('HSET', jk .. ':x', 'k', kind, 'e', reason)
  end
  return state
end

-- Due scheduled jobs become pending; expired leases are taken back (the
-- attempt counted), failing the job as worker lost on its last attempt.
-- A member whose record cannot be read goes to failed, where listing shows
-- it and reading it says what is wrong.
local function promote(base, now, now_s)
  local scheduled, running = base .. ':scheduled', base .. ':running'
  local due = redis.call('ZRANGEBYSCORE', scheduled, '-inf', now, 'LIMIT', 0, 1000)
  if #due > 0 then
    batched('ZREM', scheduled, due)
    for _, m in ipairs(due) do
      local mk = base .. ':job:' .. seq_of(m) .. ':m'
      local st, a, t, l, r, b, p, x, fl = string.match(mget({mk})[1] or '', MUT)
      if st then
        redis.call('SET', mk, mut('pending', a, t, l, r, b, p, x, fl))
        redis.call('ZADD', base .. ':pending', -tonumber(p), m)
      else
        redis.call('ZADD', base .. ':failed', now, m)
      end
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', running, '-inf', now, 'LIMIT', 0, 1000)
  if #expired > 0 then
    batched('ZREM', running, expired)
    for _, m in ipairs(expired) do
      local seq = seq_of(m)
      local f = mget({base .. ':job:' .. seq .. ':m'})[1] or ''
      local st, a = string.match(f, MUT)
      if st == 'running' then
        end_attempt(base, seq, now, now_s, f, 'worker_lost',
          'worker lost: lease expired during attempt ' .. a, nil, nil, false)
      else
        redis.call('ZADD', base .. ':failed', now, m)
      end
    end
  end
end

-- A job's whole record as the host decodes it, or false. A record that is
-- there but not in this layout comes back without its parts, for the host
-- to report.
local function record(base, seq)
  local jk = base .. ':job:' .. seq
  local f = mget({jk, jk .. ':m'})
  if not f[1] and not f[2] and redis.call('EXISTS', jk, jk .. ':m') == 0 then return false end
  local more = redis.call('HMGET', jk .. ':x', 'k', 'e', 'g')
  return {seq, f[1], f[2], more[1], more[2], more[3], redis.call('LRANGE', jk .. ':h', 0, -1)}
end

-- Enqueue jobs: ARGV[2..] in groups of six (record part d, priority, max
-- attempts, has unique key '0'/'1', unique key, run at ms). Returns {the
-- time to mark the queue due at or -1, {seq, 1} per new job or {seq, 0}
-- for the live job holding the unique key, enqueued in its place, 1 if the
-- queue is new (never used, or removed: its stats have no `on` field)}.
local function dispatch(keys, args)
  local base, now_s = keys[1], args[1]
  local now = tonumber(now_s)
  local before = next_due(base, now)
  local unique, stats = base .. ':unique', base .. ':stats'
  local records, pending, scheduled = {}, {}, {}
  local out = {}
  local anew = redis.call('HSETNX', stats, 'on', 1)
  for i = 2, #args, 6 do
    local d, priority, max = args[i], args[i + 1], args[i + 2]
    local keyed, ukey, run_at = args[i + 3] == '1', args[i + 4], args[i + 5]
    local existing = keyed and redis.call('HGET', unique, ukey)
    if existing then
      out[#out + 1] = {tonumber(existing), 0}
    else
      local seq = tostring(redis.call('HINCRBY', stats, 'seq', 1))
      local jk = base .. ':job:' .. seq
      local state = tonumber(run_at) > now and 'scheduled' or 'pending'
      records[#records + 1] = jk
      records[#records + 1] = d
      records[#records + 1] = jk .. ':m'
      records[#records + 1] = mut(state, '0', '0', '', run_at, '', priority, max, keyed and 'u' or '')
      if keyed then
        redis.call('HSET', jk .. ':x', 'u', ukey)
        redis.call('HSET', unique, ukey, seq)
      end
      if state == 'scheduled' then
        scheduled[#scheduled + 1] = run_at
        scheduled[#scheduled + 1] = member(seq)
      else
        pending[#pending + 1] = -tonumber(priority)
        pending[#pending + 1] = member(seq)
      end
      out[#out + 1] = {tonumber(seq), 1}
    end
  end
  batched('MSET', nil, records)
  batched('ZADD', base .. ':pending', pending)
  batched('ZADD', base .. ':scheduled', scheduled)
  wake(base)
  return {moved(base, now, before), out, anew}
end

-- Take up to ARGV[2] pending jobs under leases expiring at ARGV[3], after
-- promoting due and expired jobs. Returns per job the string
-- 'seq\nm\nd' or, for a job with earlier failed attempts, the list {seq,
-- d, m, k, e, g, history}. ZRANGE and
-- ZREMRANGEBYRANK rather than ZPOPMIN: the same jobs, without formatting
-- a score per job into the reply. The batch's records are read with one
-- MGET and written with one MSET.
local function claim(keys, args)
  local base, now_s, max, expires = keys[1], args[1], tonumber(args[2]), args[3]
  local now = tonumber(now_s)
  promote(base, now, now_s)
  local out = {}
  if max <= 0 then return out end
  if redis.call('HEXISTS', base .. ':stats', 'paused') == 1 then return out end
  local pending = base .. ':pending'
  local popped = redis.call('ZRANGE', pending, 0, max - 1)
  if #popped == 0 then return out end
  redis.call('ZREMRANGEBYRANK', pending, 0, #popped - 1)
  local names, seqs = {}, {}
  for i, m in ipairs(popped) do
    local seq = seq_of(m)
    local jk = base .. ':job:' .. seq
    seqs[i] = seq
    names[2 * i - 1] = jk
    names[2 * i] = jk .. ':m'
  end
  local values = mget(names)
  local writes, running, unreadable = {}, {}, {}
  for i, m in ipairs(popped) do
    local seq, d, f = seqs[i], values[2 * i - 1], values[2 * i]
    local a, t, r, rest = string.match(f or '', TAKE)
    if a and d then
      local nm = 'running|' .. (a + 1) .. '|' .. (t + 1) .. '|' .. expires .. '|'
        .. r .. '|' .. now_s .. '|' .. rest
      writes[#writes + 1] = names[2 * i]
      writes[#writes + 1] = nm
      running[#running + 1] = expires
      running[#running + 1] = m
      if has(rest, 'f') then
        local jk = names[2 * i - 1]
        local more = redis.call('HMGET', jk .. ':x', 'k', 'e', 'g')
        out[#out + 1] = {seq, d, nm, more[1], more[2], more[3],
          redis.call('LRANGE', jk .. ':h', 0, -1)}
      else
        -- One string rather than a list of three: one reply element to
        -- build here and to parse in the worker, per job.
        out[#out + 1] = seq .. '\n' .. nm .. '\n' .. d
      end
    elseif d or f or redis.call('EXISTS', names[2 * i - 1]) == 1 then
      unreadable[#unreadable + 1] = now
      unreadable[#unreadable + 1] = m
    end
    -- A member without a record (never written by this library) is dropped.
  end
  batched('MSET', nil, writes)
  if #running > 0 then
    -- Kept in Redis's skiplist encoding: a member longer than
    -- zset-max-listpack-value makes it one, and it stays one when that
    -- member goes. A small sorted set is otherwise a listpack, in which
    -- every insert and removal scans all entries, parsing each score:
    -- with a worker's worth of jobs running, that is about a fifth of the
    -- server's time per job. Only speed depends on it.
    skiplist_member = skiplist_member or string.rep('~', 256)
    local key = base .. ':running'
    redis.call('ZADD', key, 0, skiplist_member)
    batched('ZADD', key, running)
    redis.call('ZREM', key, skiplist_member)
  end
  batched('ZADD', base .. ':failed', unreadable)
  if redis.call('ZCARD', pending) > 0 then wake(base) end
  return out
end

-- Record how attempts ended: ARGV[2] is how many ended done, followed by
-- a pair (seq, token) for each; then the others in groups of seven (seq,
-- token, action retry|fail|release, failure kind, error, run again at ms,
-- log). Done acks are most and need the least, so they come short, and
-- their records are read with one MGET and deleted with one DEL. An ack
-- whose token is not the job's current lease changes nothing ('stale').
-- Returns {the time to mark the queue due at or -1, per ack in that
-- order 'done', 'pending', 'scheduled', 'failed' or 'stale'}.
local function complete(keys, args)
  local base, now_s = keys[1], args[1]
  local now = tonumber(now_s)
  local out, finished, gone, deleted = {}, {}, {}, {}
  local woke, done = false, 0
  local others = 3 + 2 * tonumber(args[2])
  -- Only acks other than done can bring work back.
  local before = others <= #args and next_due(base, now)
  local names = {}
  for i = 3, others - 1, 2 do
    names[#names + 1] = base .. ':job:' .. args[i] .. ':m'
  end
  local values = mget(names)
  for n = 1, #names do
    local seq, token = args[1 + 2 * n], args[2 + 2 * n]
    local st, t, fl = string.match(values[n] or '', FENCE)
    -- `deleted`: a second ack of one job in the batch is stale.
    if st ~= 'running' or t ~= token or deleted[seq] then
      out[#out + 1] = 'stale'
    else
      deleted[seq] = true
      finished[#finished + 1] = member(seq)
      release_unique(base, seq, fl)
      record_keys(base .. ':job:' .. seq, gone, fl)
      done = done + 1
      out[#out + 1] = 'done'
    end
  end
  batched('DEL', nil, gone)
  for i = others, #args, 7 do
    local seq, token, action = args[i], args[i + 1], args[i + 2]
    local mk = base .. ':job:' .. seq .. ':m'
    local f = mget({mk})[1]
    local st, a, t, _, r, _, p, x, fl = string.match(f or '', MUT)
    local result
    if st ~= 'running' or t ~= token then
      result = 'stale'
    else
      finished[#finished + 1] = member(seq)
      if action == 'release' then
        -- Not counted: the attempt number goes back and leaves no entry.
        redis.call('SET', mk, mut('pending', tonumber(a) - 1, t, '', r, '', p, x, fl))
        redis.call('ZADD', base .. ':pending', -tonumber(p), member(seq))
        result = 'pending'
      else
        result = end_attempt(base, seq, now, now_s, f, args[i + 3], args[i + 4],
          args[i + 6], args[i + 5], action == 'fail')
      end
      if result == 'pending' or result == 'scheduled' then woke = true end
    end
    out[#out + 1] = result
  end
  batched('ZREM', base .. ':running', finished)
  if done > 0 then redis.call('HINCRBY', base .. ':stats', 'done', done) end
  if woke then
    wake(base)
    return {moved(base, now, before or nil), out}
  end
  return {-1, out}
end

-- Extend leases: ARGV[2..] in groups of three (seq, token, new expiry ms).
-- Returns 1 per renewed lease, 0 where it is no longer current.
local function renew(keys, args)
  local base = keys[1]
  local out = {}
  for i = 2, #args, 3 do
    local seq, token, expires = args[i], args[i + 1], args[i + 2]
    local mk = base .. ':job:' .. seq .. ':m'
    local st, a, t, _, r, b, p, x, fl = string.match(mget({mk})[1] or '', MUT)
    if st == 'running' and t == token then
      redis.call('SET', mk, mut(st, a, t, expires, r, b, p, x, fl))
      redis.call('ZADD', base .. ':running', expires, member(seq))
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
  return out
end

-- Pauses the queue (ARGV[2] '1': its jobs stay where they are and no
-- claim takes any) or resumes it ('0'). Returns {1 if that changed it,
-- when to mark it due or -1}; resuming wakes a waiting worker.
local function pause(keys, args)
  local base, now = keys[1], tonumber(args[1])
  local stats = base .. ':stats'
  if args[2] == '1' then
    return {redis.call('HSET', stats, 'paused', '1'), -1}
  end
  local changed = redis.call('HDEL', stats, 'paused')
  local at = -1
  if changed == 1 then
    at = next_due(base, now) or -1
    if at ~= -1 then wake(base) end
  end
  return {changed, at}
end

-- How long until this queue may have runnable work: 0 if a job is pending
-- or due, ms until the next due time or lease expiry, or -1 if never.
local function peek(keys, args)
  local now = tonumber(args[1])
  local next_at = next_due(keys[1], now)
  if not next_at then return -1 end
  if next_at <= now then return 0 end
  return next_at - now
end

-- Mark queues due: ARGV[2..] in pairs (queue, when it may have work, ms).
-- A mark only moves a queue earlier.
local function mark(keys, args)
  local due = keys[1]
  for i = 2, #args, 2 do
    redis.call('HINCRBY', due .. ':marks', args[i], 1)
    redis.call('ZADD', due, 'LT', args[i + 1], args[i])
  end
  wake(due)
  return (#args - 1) / 2
end

-- Queues due by now, at most ARGV[3] of them, starting ARGV[2] places into
-- the index's order (wrapping), so that more due queues than one reply
-- holds are all reached in turn. Returns {how many are due, queue,
-- marks, queue, marks, ...}.
local function due(keys, args)
  local index, now = keys[1], args[1]
  local total = redis.call('ZCOUNT', index, '-inf', now)
  if total == 0 then return {0} end
  local offset, most = tonumber(args[2]) % total, tonumber(args[3])
  local queues = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', offset, most)
  if #queues < most and offset > 0 then
    local more = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, math.min(offset, most - #queues))
    for _, q in ipairs(more) do queues[#queues + 1] = q end
  end
  local marks = redis.call('HMGET', index .. ':marks', unpack(queues))
  local out = {total}
  for i, q in ipairs(queues) do
    out[#out + 1] = q
    out[#out + 1] = marks[i] or '0'
  end
  return out
end

-- After a worker found less work in a due queue than it asked for:
-- ARGV[2] the queue, ARGV[3] its marks as the worker read them, ARGV[4]
-- when it may next have work (ms, looked up after the claim) or -1 for
-- never. Unless it was marked since, the queue moves to that time or
-- leaves the index. The marks stay: a count that only grows cannot come
-- back to a value a slow worker read. Returns 1 if it settled.
local function settle(keys, args)
  local index, queue = keys[1], args[2]
  if (redis.call('HGET', index .. ':marks', queue) or '0') ~= args[3] then return 0 end
  if args[4] == '-1' then
    redis.call('ZREM', index, queue)
  else
    redis.call('ZADD', index, 'XX', args[4], queue)
  end
  return 1
end

-- One job's record (ARGV[2] = seq), or nil.
local function read(keys, args)
  return record(keys[1], args[2])
end

-- Records of one state (ARGV[2]: pending|scheduled|running|failed) in index
-- order, skipping ARGV[3], at most ARGV[4].
local function list(keys, args)
  local base = keys[1]
  local first = tonumber(args[3])
  local members = redis.call('ZRANGE', base .. ':' .. args[2], first, first + tonumber(args[4]) - 1)
  local out = {}
  for _, m in ipairs(members) do
    local r = record(base, seq_of(m))
    if r then out[#out + 1] = r end
  end
  return out
end

-- Put a failed job (ARGV[2] = seq) back to pending with fresh attempts.
-- Returns 'ok', 'missing', 'unreadable', or the state it is in; after
-- 'ok', the caller marks the queue due.
local function retry(keys, args)
  local base, now_s, seq = keys[1], args[1], args[2]
  local jk = base .. ':job:' .. seq
  local f = mget({jk .. ':m'})[1]
  if not f then
    return redis.call('EXISTS', jk) == 0 and 'missing' or 'unreadable'
  end
  local st, _, t, _, _, _, p, x, fl = string.match(f, MUT)
  if not st then return 'unreadable' end
  if st ~= 'failed' then return st end
  redis.call('ZREM', base .. ':failed', member(seq))
  redis.call('SET', jk .. ':m', mut('pending', '0', t, '', now_s, '', p, x, fl))
  if has(fl, 'u') then
    local key = redis.call('HGET', jk .. ':x', 'u')
    if key then redis.call('HSETNX', base .. ':unique', key, seq) end
  end
  redis.call('ZADD', base .. ':pending', -tonumber(p), member(seq))
  wake(base)
  return 'ok'
end

-- Remove a job that is not running (ARGV[2] = seq), or one whose record
-- cannot be read. Returns 'deleted', 'missing' or 'running'.
local function delete(keys, args)
  local base, seq = keys[1], args[2]
  local jk = base .. ':job:' .. seq
  if redis.call('EXISTS', jk, jk .. ':m') == 0 then return 'missing' end
  local st, _, _, _, _, _, _, _, fl = string.match(mget({jk .. ':m'})[1] or '', MUT)
  if st == 'running' then return 'running' end
  local m = member(seq)
  for _, index in ipairs({'pending', 'scheduled', 'failed', 'running'}) do
    redis.call('ZREM', base .. ':' .. index, m)
  end
  release_unique(base, seq, fl or '')
  local gone = {}
  record_keys(jk, gone)
  batched('DEL', nil, gone)
  return 'deleted'
end

-- Remove up to ARGV[2] jobs that are not running; returns how many. The
-- caller repeats until it returns 0, so Redis is never blocked for long.
local function purge(keys, args)
  local base = keys[1]
  local left = tonumber(args[2])
  local removed = 0
  for _, name in ipairs({'pending', 'scheduled', 'failed'}) do
    if left <= 0 then break end
    local index = base .. ':' .. name
    local members = redis.call('ZRANGE', index, 0, left - 1)
    local gone = {}
    for _, m in ipairs(members) do
      local seq = seq_of(m)
      local jk = base .. ':job:' .. seq
      local fl = select(9, string.match(mget({jk .. ':m'})[1] or '', MUT))
      release_unique(base, seq, fl or '')
      record_keys(jk, gone)
    end
    batched('DEL', nil, gone)
    batched('ZREM', index, members)
    removed = removed + #members
    left = left - #members
  end
  return removed
end

-- Remove a queue whole: up to ARGV[2] jobs per call (pending, scheduled
-- and failed ones), then, on the call that finds none left, its counts and
-- unique keys. Its last job number stays (the `seq` field of its stats),
-- so a queue dispatched to again never gives an id twice, and a tree count
-- rooted here (left to expire) is never taken for a new root's. Returns
-- how many jobs went, or -1 (and changes nothing) while any job runs. The
-- caller repeats until it returns 0.
local function drop(keys, args)
  local base = keys[1]
  if redis.call('ZCARD', base .. ':running') > 0 then return -1 end
  local removed = purge(keys, args)
  if removed == 0 then
    local stats = base .. ':stats'
    local seq = redis.call('HGET', stats, 'seq')
    redis.call('DEL', stats, base .. ':unique', base .. ':wake')
    if seq then redis.call('HSET', stats, 'seq', seq) end
  end
  return removed
end

-- The tenant registry (KEYS[1], a hash: name -> record, JSON). ARGV[2] is
-- 'create' (only if the name has no record) or the token_sha256 of the
-- record to replace (only if the stored one has it); ARGV[3] the name,
-- ARGV[4] the record. Returns 1 if written.
local function registry(keys, args)
  local stored = redis.call('HGET', keys[1], args[3])
  if args[2] == 'create' then
    if stored then return 0 end
  elseif not stored or cjson.decode(stored).token_sha256 ~= args[2] then
    return 0
  end
  redis.call('HSET', keys[1], args[3], args[4])
  return 1
end

-- A tenant's dispatch bucket (KEYS[1], a hash: tokens, at ms). ARGV: now,
-- jobs, rate per second, burst. Takes `jobs` tokens if it holds them
-- (returns {1, 0, tokens left}); else takes none and returns {0, ms until
-- it would, tokens held}. A negative `jobs` gives tokens back (never above
-- the burst); 0 only reads. The same
-- rule as the in-memory backend's (quota.rs `take`), waits capped at a
-- year. Expires once it would be full again, and never within a minute, so
-- a bucket is not forgotten while its owner's clock and the server's
-- disagree.
local YEAR_MS = 31536000000
local function bucket(keys, args)
  local now, jobs = tonumber(args[1]), tonumber(args[2])
  local rate, burst = tonumber(args[3]), tonumber(args[4])
  local state = redis.call('HMGET', keys[1], 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  if now > at then
    tokens = math.min(burst, tokens + (now - at) / 1000 * rate)
    at = now
  end
  -- Asked for nothing: only read, and write nothing (a reader's clock
  -- moves no bucket).
  if jobs == 0 then return {1, 0, string.format('%.3f', tokens)} end
  local taken = 0
  local wait = 0
  if jobs < 0 then
    tokens = math.min(burst, tokens - jobs)
    taken = 1
  elseif tokens >= jobs then
    tokens = tokens - jobs
    taken = 1
  else
    wait = math.min(YEAR_MS, math.ceil((jobs - tokens) / rate * 1000))
  end
  redis.call('HSET', keys[1], 'tokens', string.format('%.6f', tokens), 'at', at)
  local full = math.min(YEAR_MS, math.ceil((burst - tokens) / rate * 1000))
  redis.call('PEXPIRE', keys[1], math.max(full, 0) + 60000)
  return {taken, wait, string.format('%.3f', tokens)}
end

-- A tenant's jobs in flight across the fleet (KEYS[1], a hash: holder ->
-- 'jobs|expires ms'; a holder is one worker). ARGV: now, then what to do:
--   take holder want max expires: grants up to `want` more to `holder`,
--     keeping the tenant's total within `max`; returns {granted, total}.
--   give holder n: `holder` has `n` fewer; returns {0, total}.
--   hold holder expires: `holder` keeps what it has until `expires`.
--   count: returns {0, total}.
-- A holder whose time passed (a worker that died) holds nothing: its
-- jobs' leases have expired as well. The key expires a minute after its
-- last holder would.
local function flight(keys, args)
  local key, now, op, holder = keys[1], tonumber(args[1]), args[2], args[3]
  local all = redis.call('HGETALL', key)
  local total, mine, mine_until = 0, 0, 0
  for i = 1, #all, 2 do
    local n, at = string.match(all[i + 1], '^(%d+)|(%d+)$')
    n, at = tonumber(n), tonumber(at)
    if not n or at <= now then
      redis.call('HDEL', key, all[i])
    else
      total = total + n
      if all[i] == holder then mine, mine_until = n, at end
    end
  end
  local function keep(n, expires)
    if n <= 0 then
      redis.call('HDEL', key, holder)
      return
    end
    redis.call('HSET', key, holder, n .. '|' .. expires)
    local ttl = expires - now + 60000
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
  if op == 'take' then
    local want, max = tonumber(args[4]), tonumber(args[5])
    local granted = math.max(0, math.min(want, max - total))
    if granted > 0 then
      keep(mine + granted, math.max(mine_until, tonumber(args[6])))
    end
    return {granted, total + granted}
  elseif op == 'give' then
    local n = math.min(mine, tonumber(args[4]))
    keep(mine - n, mine_until)
    return {0, total - n}
  elseif op == 'hold' then
    if mine > 0 then keep(mine, math.max(mine_until, tonumber(args[4]))) end
    return {0, total}
  end
  return {0, total}
end

-- A tenant's attempt run time (KEYS[1], <prefix>{@t/<tenant>}:runtime, a
-- hash: period = when the period it counts began, ms = run time in it).
-- ARGV[2] the caller's period's start, ARGV[3] the period's length, ARGV[4]
-- ms to add (0: only read). A later period starts from 0; a caller whose
-- clock is behind adds to the latest. Returns the run time in the period.
local function runtime(keys, args)
  local key, now = keys[1], tonumber(args[1])
  local start, length, add = tonumber(args[2]), tonumber(args[3]), tonumber(args[4])
  local held = redis.call('HMGET', key, 'period', 'ms')
  local period, used = tonumber(held[1]) or 0, tonumber(held[2]) or 0
  if start > period then period, used = start, 0 end
  if add <= 0 then return used end
  used = used + add
  redis.call('HSET', key, 'period', period, 'ms', used)
  -- Kept until its period is over, and a minute more.
  redis.call('PEXPIRE', key, math.max(period + length - now, 0) + 60000)
  return used
end

-- Attempts that ran to an outcome in one minute (KEYS[1], the fleet's
-- <prefix>{@throughput} or a tenant's <prefix>{@t/<tenant>}:throughput: a
-- hash of one field per minute modulo the minutes kept, each
-- "minute|processed|failed"). ARGV[2] the minute, ARGV[3] its field,
-- ARGV[4] and ARGV[5] the attempts processed and failed to add, ARGV[6]
-- how long the hash is kept after this write (ms). A field holding an
-- earlier minute starts again from nothing; one holding a later minute
-- (added by a clock ahead by all the minutes kept) is left as it is.
-- Returns 1 if it added, else 0.
local function throughput(keys, args)
  local key, minute, field = keys[1], tonumber(args[2]), args[3]
  local processed, failed = tonumber(args[4]), tonumber(args[5])
  local held = redis.call('HGET', key, field)
  if held then
    local at, p, f = string.match(held, '^(%d+)|(%d+)|(%d+)$')
    at = tonumber(at)
    if at == minute then
      processed, failed = processed + tonumber(p), failed + tonumber(f)
    elseif at and at > minute then
      return 0
    end
  end
  redis.call('HSET', key, field, args[2] .. '|' .. processed .. '|' .. failed)
  redis.call('PEXPIRE', key, args[6])
  return 1
end

-- A job tree's count, kept in its root's queue slot (KEYS[1], a hash:
-- jobs = jobs the tree ever held, root included; live = follow-ups not yet
-- done) with a copy on the root's record (KEYS[2], the root's `:x` hash,
-- field tree_jobs) for as long as the root exists (KEYS[3], its record).
-- Called on its own: the follow-up being counted is enqueued in its own
-- queue's slot, which may be on another node.
--
-- ARGV[1] is what to do:
--   reserve depth max_jobs keep_ms: count one more job unless the tree
--     holds max_jobs already. Returns {'ok', jobs before}, {'full', jobs},
--     or {'closed', 0} when a follow-up (depth > 1) finds no count.
--   refund: take back a reservation whose follow-up was not enqueued (its
--     unique key was held meanwhile).
--   leave: a follow-up is done.
-- The count is dropped when no follow-up is live; only the root can bring
-- it back (from its record), so neither finishing nor retrying jobs gives a
-- tree a new budget.
local function tree(keys, args)
  local count, root, root_record = keys[1], keys[2], keys[3]
  local op = args[1]
  if op == 'reserve' then
    local depth, max_jobs, keep = tonumber(args[2]), tonumber(args[3]), args[4]
    local jobs = tonumber(redis.call('HGET', count, 'jobs'))
    if not jobs then
      if depth > 1 then return {'closed', 0} end
      jobs = tonumber(redis.call('HGET', root, 'tree_jobs') or '1')
    end
    if jobs >= max_jobs then return {'full', jobs} end
    redis.call('HSET', count, 'jobs', jobs + 1)
    redis.call('HINCRBY', count, 'live', 1)
    redis.call('PEXPIRE', count, keep)
    if redis.call('EXISTS', root_record) == 1 then redis.call('HSET', root, 'tree_jobs', jobs + 1) end
    return {'ok', jobs}
  end
  if redis.call('EXISTS', count) == 0 then return {'ok', 0} end
  if op == 'refund' then
    local jobs = redis.call('HINCRBY', count, 'jobs', -1)
    if redis.call('EXISTS', root_record) == 1 then redis.call('HSET', root, 'tree_jobs', jobs) end
  end
  if redis.call('HINCRBY', count, 'live', -1) <= 0 then redis.call('DEL', count) end
  return {'ok', 0}
end

-- Loading runs in a bare environment (no `pairs`): one call each.
redis.register_function(NAME .. '_dispatch', dispatch)
redis.register_function(NAME .. '_claim', claim)
redis.register_function(NAME .. '_complete', complete)
redis.register_function(NAME .. '_renew', renew)
redis.register_function(NAME .. '_peek', peek)
redis.register_function(NAME .. '_mark', mark)
redis.register_function(NAME .. '_due', due)
redis.register_function(NAME .. '_settle', settle)
redis.register_function(NAME .. '_read', read)
redis.register_function(NAME .. '_list', list)
redis.register_function(NAME .. '_retry', retry)
redis.register_function(NAME .. '_delete', delete)
redis.register_function(NAME .. '_purge', purge)
redis.register_function(NAME .. '_tree', tree)
redis.register_function(NAME .. '_drop', drop)
redis.register_function(NAME .. '_registry', registry)
redis.register_function(NAME .. '_bucket', bucket)
redis.register_function(NAME .. '_flight', flight)
redis.register_function(NAME .. '_runtime', runtime)
redis.register_function(NAME .. '_throughput', throughput)
redis.register_function(NAME .. '_pause', pause)
