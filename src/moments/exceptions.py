"""The root of every error the project raises on purpose."""


class MomentsError(Exception):
    """Base class: catch this to catch any error of ours."""


class ConfigError(MomentsError):
    """A setting is missing or wrong; the message names the variable and the fix."""


class RedisClusterError(ConfigError):
    """MOMENTS_REDIS_URL names a Redis in cluster mode, whose hash slots the ledger's Lua
    scripts cross (`moments.connections.check_redis`)."""
