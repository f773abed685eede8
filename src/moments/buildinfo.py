"""Which versions a worker runs: `moments --version` and `moments_build_info`."""

from __future__ import annotations

import platform
from functools import cache
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("moments", "faust-streaming", "aiokafka", "redis")


@cache
def versions() -> dict[str, str]:
    """The installed version of each of `PACKAGES` ("unknown" when not installed as a
    distribution, e.g. src/ on PYTHONPATH)."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "unknown"
    return found


def build_labels() -> dict[str, str]:
    """The labels of `moments_build_info`: one series per worker, value 1."""
    found = versions()
    return {
        "version": found["moments"],
        "python": platform.python_version(),
        "faust": found["faust-streaming"],
        "aiokafka": found["aiokafka"],
    }
