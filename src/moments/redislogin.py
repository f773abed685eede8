"""The Redis login of a password kept in a file, read again at each new connection.

A Kubernetes Secret mounted as a volume (deploy/k8s: `MOMENTS_REDIS_PASSWORD_FILE`) is
updated in place when the Secret changes. A worker that kept the password it read at
start could not log in again once Redis took the new one (`requirepass`, an ACL user's
password): its next connection was refused. Read at each connection, the new password is
used as soon as the kubelet has written it, and the worker's back-off on the refused
login (`sinks.retry`) ends without a restart.
"""

from __future__ import annotations

import logging

from redis.credentials import CredentialProvider

from moments.exceptions import ConfigError
from moments.logmask import add_secret
from moments.secret_files import file_variable, read_secret_file

log = logging.getLogger(__name__)

VARIABLE = file_variable("redis_password")
"""`MOMENTS_REDIS_PASSWORD_FILE`."""


class PasswordFileLogin(CredentialProvider):
    """`username` (None: Redis's `default` user) and the password in `path`, read when a
    connection is made; `password` is the one read at start, used while the file cannot
    be read (a Secret being swapped)."""

    def __init__(self, username: str | None, path: str, password: str) -> None:
        self.username = username
        self.path = path
        self.password = password
        self._unreadable = False

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = read_secret_file(VARIABLE, self.path)
        except ConfigError as exc:
            if not self._unreadable:
                log.warning(
                    "%s; logging in to Redis with the password read before",
                    str(exc).removeprefix("invalid configuration:\n  "),
                )
            self._unreadable = True
        else:
            if password != self.password:
                add_secret(password)
                log.warning(
                    "%s %s holds a new password: Redis connections log in with it from now on",
                    VARIABLE,
                    self.path,
                )
            self.password = password
            self._unreadable = False
        return (self.username, self.password) if self.username else (self.password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()
