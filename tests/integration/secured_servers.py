"""Real servers with authentication on: a password/ACL/TLS redis-server and an
`--authentication` Tansu. The embedded classes check readiness unauthenticated,
so these subclasses only change how readiness is checked."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from moments.embedded import HOST, EmbeddedError, RedisServer, TansuBroker, probe_kafka

ADMIN_PASSWORD = "admin-pw"
ACL_USER, ACL_PASSWORD = "moments", "acl-pw"
LIMITED_USER, LIMITED_PASSWORD = "reader", "reader-pw"
LEDGER_ACL = ("~moments:*", "+@read", "+@write", "+@scripting", "+ping", "-@dangerous")
"""The narrowest rights the ledger needs, as docs/security.md recommends them."""


class SecuredRedis(RedisServer):
    """redis-server with `requirepass`, an ACL user for the ledger keys, and one that may
    only PING; optionally a TLS port as well."""

    def __init__(self, workdir: Path, tls: dict[str, Path] | None = None, tls_port: int = 0):
        args = [
            "--requirepass",
            ADMIN_PASSWORD,
            "--user",
            ACL_USER,
            "on",
            f">{ACL_PASSWORD}",
            *LEDGER_ACL,
            "--user",
            LIMITED_USER,
            "on",
            f">{LIMITED_PASSWORD}",
            "~*",
            "-@all",
            "+ping",
        ]
        if tls is not None:
            args += [
                "--tls-port",
                str(tls_port),
                "--tls-cert-file",
                str(tls["cert"]),
                "--tls-key-file",
                str(tls["key"]),
                "--tls-ca-cert-file",
                str(tls["ca"]),
                "--tls-auth-clients",
                "no",
            ]
        super().__init__(workdir, extra_args=args)

    def _answers(self, port: int, pid: int) -> bool:
        import redis

        client = redis.Redis(host=HOST, port=port, password=ADMIN_PASSWORD, socket_timeout=1.0)
        try:
            info: dict[str, Any] = client.info("server")
        except redis.RedisError as exc:
            raise EmbeddedError(f"redis on port {port}: {exc}") from exc
        finally:
            client.close()
        return int(info.get("process_id", -1)) == pid


class AuthenticatingTansu(TansuBroker):
    """Tansu started with `--authentication`: only ApiVersions and SASL answer before a login,
    so readiness is an ApiVersions round trip (a Metadata request closes the connection)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, extra_args=["--authentication"])

    def _answers(self, port: int, pid: int) -> bool:
        try:
            probe_kafka(f"{HOST}:{port}", timeout=1.0)
        except ConnectionRefusedError:
            raise
        except ConnectionError:
            pass  # ApiVersions answered, Metadata refused: what authentication looks like
        return self._proc is not None and self._proc.poll() is None

    def create_user(self, name: str, password: str, mechanism: str = "scram512") -> str:
        """`tansu user create ...`; returns its combined output (it exits 0 or 1)."""
        done = subprocess.run(
            [
                str(self.binary),
                "user",
                "create",
                "--broker",
                f"tcp://{self.bootstrap}",
                "--mechanism",
                mechanism,
                name,
                password,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return f"exit {done.returncode}: {done.stdout}{done.stderr}"
