-- Records of one state (ARGV[3]: pending|scheduled|running|failed) in index
-- order, skipping ARGV[4], at most ARGV[5].
local index = ({pending = K_PENDING, scheduled = K_SCHEDULED, running = K_RUNNING, failed = K_FAILED})[ARGV[3]]
local first = tonumber(ARGV[4])
local members = redis.call('ZRANGE', index, first, first + tonumber(ARGV[5]) - 1)
local out = {}
for _, m in ipairs(members) do out[#out + 1] = record(seq_of(m)) end
return out
