"""The root of every error the project raises on purpose."""


class MomentsError(Exception):
    """Base class: catch this to catch any error of ours."""


class ConfigError(MomentsError):
    """A setting is missing or wrong; the message names the variable and the fix."""


class RedisClusterError(ConfigError):
    """MOMENTS_REDIS_URL names a Redis in cluster mode, whose hash slots the ledger's Lua
    scripts cross (`moments.connections.check_redis`)."""


class InputRefusedError(ConfigError):
    """A file the command was given, read and found wanting (a dispatch policy with its
    problems): exit 1, as rules refused, where a setting or a path given wrong is 2
    (README, "Exit codes"). A `ConfigError` still, so that a reload refused keeps the
    policy in force as before; a worker refused its policy exited 2, its rules 1."""
