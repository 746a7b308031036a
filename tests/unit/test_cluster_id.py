"""The local broker's KRaft cluster id is always a valid argument for Kafka's storage tool."""

from __future__ import annotations

import base64

import pytest

from streamrec.stack.kafka_broker import new_cluster_id

pytestmark = pytest.mark.unit


def test_cluster_ids_never_start_with_a_dash_and_decode_to_16_bytes() -> None:
    ids = [new_cluster_id() for _ in range(5000)]  # about 78 of them would start with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert len(set(ids)) == len(ids)
    for cluster_id in ids[:100]:
        assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16
