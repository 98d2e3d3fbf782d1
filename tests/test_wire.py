"""The message format against an independent reference: the MAC every message ends with is
HMAC-SHA256 (RFC 2104, as Python's :mod:`hmac` computes it) truncated to 128 bits."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pytest

from sn40l.collectives.types import Drop
from sn40l.collectives.wire import MAC_BYTES, Dropped, decode, encode


@pytest.mark.parametrize("key_bytes", [32, 64, 100])
@pytest.mark.parametrize("payload_bytes", [0, 100, 4096, 70_000])
def test_mac_is_rfc2104_hmac_sha256(payload_bytes, key_bytes):
    key = bytes(i % 251 for i in range(key_bytes))
    payload = np.arange(payload_bytes, dtype=np.uint8).data
    parts = encode(key, b"grp", 7, 3, 1, 12345, count=payload_bytes, dt=b"|u1",
                   payload=payload)
    body = b"".join(bytes(p) for p in parts[:-1])
    assert parts[-1] == hmac.new(key, body, hashlib.sha256).digest()[:MAC_BYTES]
    msg = decode(body + parts[-1], key)
    assert (msg.seq, msg.tag, msg.src, msg.t, bytes(msg.payload)) == (7, 3, 1, 12345,
                                                                      bytes(payload))
    other = bytes(32)
    with pytest.raises(Dropped) as err:
        decode(body + parts[-1], other)
    assert err.value.reason is Drop.BAD_MAC
