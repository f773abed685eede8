"""Real servers with authentication on: a password/ACL/TLS redis-server, an
`--authentication` Tansu, and Tansu behind a mutual-TLS listener (stunnel). The
embedded classes check readiness unauthenticated, so these subclasses only change
how readiness is checked (and, for TLS, where the broker sends its clients)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from moments.embedded import (
    HOST,
    EmbeddedError,
    RedisServer,
    TansuBroker,
    _ManagedServer,
    free_port,
)

ADMIN_PASSWORD = "admin-pw"
ACL_USER, ACL_PASSWORD = "moments", "acl-pw"
LIMITED_USER, LIMITED_PASSWORD = "reader", "reader-pw"
LEDGER_ACL = ("~moments:*", "+@read", "+@write", "+@scripting", "+ping", "-@dangerous")
"""The narrowest rights the ledger needs, as docs/security.md recommends them."""
ELSEWHERE_USER, ELSEWHERE_PASSWORD = "other-app", "other-pw"
ELSEWHERE_ACL = ("~billing:*", *LEDGER_ACL[1:])
"""The recommended rights on another key pattern than the app's (`moments:<app id>:*`)."""


class SecuredRedis(RedisServer):
    """redis-server with `requirepass`, an ACL user for the ledger keys, one that may only
    PING and one with the ledger's rights on other keys; optionally a TLS port as well."""

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
            "--user",
            ELSEWHERE_USER,
            "on",
            f">{ELSEWHERE_PASSWORD}",
            *ELSEWHERE_ACL,
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
    """Tansu started with `--authentication`: only ApiVersions and SASL answer before a login
    (a Metadata request closes the connection), so readiness is our child accepting
    connections on the port (the start checks in /proc that the listener is ours)."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, extra_args=["--authentication"])

    def _answers(self, port: int, pid: int) -> bool:
        return _accepts(port) and self._proc is not None and self._proc.poll() is None

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


STUNNEL = shutil.which("stunnel4") or shutil.which("stunnel")


class AdvertisingTansu(TansuBroker):
    """Tansu listening in plaintext on its own port but advertising `advertised_port`, where
    a TLS front forwards to it: after bootstrap every client connection goes through TLS."""

    def __init__(self, workdir: Path, advertised_port: int) -> None:
        super().__init__(workdir)
        self.advertised_port = advertised_port

    def _command(self, port: int, workdir: Path) -> list[str]:
        command = super()._command(port, workdir)
        at = command.index("--advertised-listener-url") + 1
        command[at] = f"tcp://{HOST}:{self.advertised_port}"
        return command

    def _answers(self, port: int, pid: int) -> bool:
        # A Kafka client would follow the advertised address, whose TLS front starts
        # after the broker: readiness is the plaintext port accepting connections.
        return _accepts(port) and self._proc is not None and self._proc.poll() is None


class TlsFront(_ManagedServer):
    """stunnel (Debian package stunnel4) terminating TLS on `port` for a plaintext server on
    `target_port`: it presents `server_pem` and admits only clients whose certificate
    `client_ca` signed (mutual TLS), as a TLS listener of Kafka with
    `ssl.client.auth=required` does."""

    name: ClassVar[str] = "stunnel"

    def __init__(
        self, workdir: Path, port: int, target_port: int, server_pem: Path, client_ca: Path
    ) -> None:
        if STUNNEL is None:
            raise EmbeddedError("stunnel is missing: apt-get install -y stunnel4")
        super().__init__(workdir, port=port)
        self.target_port = target_port
        self.server_pem = server_pem
        self.client_ca = client_ca

    def _command(self, port: int, workdir: Path) -> list[str]:
        config = workdir / f"stunnel-{port}.conf"
        config.write_text(
            "foreground = yes\n"
            "pid =\n"
            "[kafka]\n"
            f"accept = {HOST}:{port}\n"
            f"connect = {HOST}:{self.target_port}\n"
            f"cert = {self.server_pem}\n"
            f"CAfile = {self.client_ca}\n"
            "verifyChain = yes\n"
            "requireCert = yes\n"
        )
        assert STUNNEL is not None
        return [STUNNEL, str(config)]

    def _answers(self, port: int, pid: int) -> bool:
        with socket.create_connection((HOST, port), timeout=1.0):
            pass
        return self._proc is not None and self._proc.poll() is None


class TlsTansu:
    """Tansu reachable only through a mutual-TLS listener: `bootstrap` is the TLS port."""

    def __init__(self, workdir: Path, server_pem: Path, client_ca: Path) -> None:
        # Known before either server starts (the broker advertises it, stunnel listens
        # on it after), and reserved for this process meanwhile (`free_port`): stunnel,
        # with SO_REUSEADDR, still binds it.
        self.tls_port = free_port()
        self.broker = AdvertisingTansu(workdir / "tansu", self.tls_port)
        self._front_args = (workdir / "stunnel", server_pem, client_ca)
        self.front: TlsFront | None = None

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.tls_port}"

    def __enter__(self) -> TlsTansu:
        self.broker.start()
        try:
            workdir, server_pem, client_ca = self._front_args
            self.front = TlsFront(workdir, self.tls_port, self.broker.port, server_pem, client_ca)
            self.front.start()
        except BaseException:
            self.broker.stop()
            raise
        return self

    def __exit__(self, *_: object) -> None:
        if self.front is not None:
            self.front.stop()
        self.broker.stop()


def _accepts(port: int) -> bool:
    """True once the port takes a connection; refused (an OSError) until then. The start
    checks in /proc that the listener is our child."""
    with socket.create_connection((HOST, port), timeout=1.0):
        pass
    return True
