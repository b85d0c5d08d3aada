"""KRaft cluster ids for the local broker: valid, and never read as a command-line option."""

from __future__ import annotations

import base64
import uuid

import pytest

from deploy.local import kafka


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # The first UUID encodes to an id starting with "-" (0xf8 -> "-" in URL-safe base64).
    dashed = uuid.UUID(bytes=b"\xf8" + b"\x00" * 15)
    plain = uuid.UUID(bytes=b"\x00" * 16)
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    drawn = iter([dashed, plain])
    monkeypatch.setattr(uuid, "uuid4", lambda: next(drawn))
    assert kafka._cluster_id() == "AAAAAAAAAAAAAAAAAAAAAA"


def test_cluster_ids_are_22_url_safe_characters() -> None:
    for _ in range(500):
        cluster_id = kafka._cluster_id()
        assert len(cluster_id) == 22
        assert not cluster_id.startswith("-")
        assert base64.urlsafe_b64decode(cluster_id + "==")
