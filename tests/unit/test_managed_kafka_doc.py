"""docs/operations.md, "Against a managed Kafka": on an account without the right to create
topics a worker starts only if every topic it would create exists, and reads only what
its ACLs let it read. The page is held to the topics the code creates and reads."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from moments.settings import Settings, load_settings
from moments.stateview import changelog_topic, returns_topic
from moments.topiclayout import OUTPUT_TOPICS

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
APP_ID = "<app id>"
"""How the page writes MOMENTS_APP_ID in a topic's name."""


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith("MOMENTS_")]:
        monkeypatch.delenv(key)
    return load_settings()


def section() -> str:
    text = OPERATIONS.read_text()
    found = re.search(r"^### Against a managed Kafka\n(.*?)^##", text, re.S | re.M)
    assert found, "docs/operations.md has no section `### Against a managed Kafka`"
    return re.sub(r"\s+", " ", found.group(1))


def as_written(settings: Settings, topic: str) -> str:
    """A topic's name as the page writes it: `<app id>-...` for the app's own."""
    prefix = f"{settings.app_id}-"
    return f"`{APP_ID}-{topic.removeprefix(prefix)}`" if topic.startswith(prefix) else f"`{topic}`"


def created_at_start(settings: Settings) -> list[str]:
    """Every topic a worker creates at start when it is missing: its outputs
    (`moments.runtime`), its returns topic (`moments.worker`), and Faust's state
    changelog and leader topic."""
    from moments.app import create_app

    app = create_app(settings)
    leader: str = app._leader_assignor._leader_topic_name  # type: ignore[attr-defined]
    outputs = [settings.topic(name) for name in OUTPUT_TOPICS]
    return [*outputs, changelog_topic(settings), returns_topic(settings), leader]


def test_every_topic_a_worker_creates_is_named_to_be_created(settings: Settings) -> None:
    """The list left out moments.task-withdrawals and Faust's leader topic: made as the
    page said, an account that may not create topics stopped every worker at start (the
    worker asked Kafka to create them, TopicAuthorizationFailedError)."""
    text = section()
    create = text.split("- Grant", 1)[0]
    missing = [t for t in created_at_start(settings) if as_written(settings, t) not in create]
    assert missing == []


def test_the_grants_let_the_worker_read_what_it_reads(settings: Settings) -> None:
    """The grants left out the changelog's read: a worker restores its state from it
    (and reads Faust's leader topic), so with them as written every restore was refused."""
    from moments.worker import read_beside_input

    grant = section().split("- Grant", 1)[1].split("\n-", 1)[0]
    read, _, write = grant.partition(" write on ")
    assert "the input topics" in read
    leader = created_at_start(settings)[-1]
    reads = [*read_beside_input(settings), leader]
    assert [t for t in reads if as_written(settings, t) not in read] == []
    changelog = changelog_topic(settings)
    assert "the changelog" in read or as_written(settings, changelog) in read
    writes = [settings.topic(n) for n in OUTPUT_TOPICS if n != "task_outcomes"]
    writes += [returns_topic(settings)]
    assert [t for t in writes if as_written(settings, t) not in write] == []
    assert "the changelog" in write
