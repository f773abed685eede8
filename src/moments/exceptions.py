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


class KafkaWriteError(ConfigError):
    """A one-off command's write the broker failed or did not acknowledge in time
    (`moments tasks ack`, `moments state seed`): the command stops with code 2, as for a
    broker that does not answer (README, "Exit codes"), in one line saying what was
    written, what may or may not have been, and the fix. aiokafka's error ended those
    commands in a traceback."""
