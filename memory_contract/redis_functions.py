"""The Redis functions the runtime calls (Redis 7+), loaded by the operator. Pure.

Tenants may not run scripts (EVAL lets one tenant block the server for every
other). What needs server-side atomicity — the rate limiter's token bucket and
the job locks' compare-and-act — is a function of this library, loaded once per
server by the operator (FUNCTION LOAD REPLACE) and called by tenants with FCALL,
the only scripting command their ACL grants. Each function is short and bounded
and touches only the keys it is given, which the tenant's ACL checks.

Function names carry a version: a changed body gets a new name, and the
library keeps the previous names for one release (FUNCTION LOAD REPLACE swaps
the whole library), so runtimes of both releases work during a rolling upgrade.
"""

from __future__ import annotations

LIBRARY = "somafractal"
TOKEN_BUCKET = "somafractal_token_bucket_v1"
LOCK_RELEASE = "somafractal_lock_release_v1"
LOCK_EXTEND = "somafractal_lock_extend_v1"

# TOKEN_BUCKET: KEYS[1] bucket; ARGV[1] capacity, ARGV[2] tokens per millisecond.
# Returns {allowed, tokens (string: Lua numbers become integers in replies)}; uses
# the server clock so replicas with skewed clocks agree.
# LOCK_RELEASE / LOCK_EXTEND: KEYS[1] lock; ARGV[1] holder token (ARGV[2] ttl ms);
# act only if the token still holds the lock. Kept for runtimes of the previous
# release only: job locks are PostgreSQL leases now (jobs/locks.py).
LIBRARY_CODE = f"""#!lua name={LIBRARY}

local function token_bucket(keys, args)
  local capacity = tonumber(args[1])
  local per_ms = tonumber(args[2])
  if capacity == nil or per_ms == nil or capacity < 1 or per_ms <= 0 then
    return redis.error_reply('ERR token bucket needs capacity >= 1 and rate > 0')
  end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local state = redis.call('HMGET', keys[1], 'tokens', 'at')
  local tokens = tonumber(state[1])
  local at = tonumber(state[2])
  if tokens == nil or at == nil then
    tokens = capacity
    at = now
  end
  if now > at then
    tokens = math.min(capacity, tokens + (now - at) * per_ms)
  end
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', keys[1], 'tokens', tostring(tokens), 'at', tostring(now))
  -- Expire once the bucket would be full again: a full bucket needs no state.
  redis.call('PEXPIRE', keys[1], math.ceil((capacity - tokens) / per_ms) + 1000)
  return {{allowed, tostring(tokens)}}
end

local function lock_release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    return redis.call('DEL', keys[1])
  end
  return 0
end

local function lock_extend(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    return redis.call('PEXPIRE', keys[1], args[2])
  end
  return 0
end

redis.register_function('{TOKEN_BUCKET}', token_bucket)
redis.register_function('{LOCK_RELEASE}', lock_release)
redis.register_function('{LOCK_EXTEND}', lock_extend)
"""

# What a tenant's ACL user may run: exactly what the runtime sends (SET NX PX for
# lock acquisition, FCALL for the functions above, PING for readiness) and what
# those functions call (the caller's ACL applies inside a function too; all of it
# on the tenant's own keys). AUTH and HELLO need no grant; redis-py's CLIENT
# SETINFO on connect is refused, which redis-py ignores. The operator renders these.
FUNCTION_COMMANDS: tuple[str, ...] = ("time", "get", "del", "hmget", "hset", "pexpire")
TENANT_COMMANDS: tuple[str, ...] = ("ping", "set", "fcall", *FUNCTION_COMMANDS)
