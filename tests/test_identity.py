"""Signed client keys: genuine ones verify, anything malformed is treated as absent."""

import pytest

from flet_resilient.identity import Identity

identity = Identity("test-secret")
GENUINE = identity.mint()
TOKEN, SIGNATURE = GENUINE.split(".")

MALFORMED = {
    "none": None,
    "int": 42,
    "list": [TOKEN, SIGNATURE],
    "bytes": GENUINE.encode(),
    "empty": "",
    "only a dot": ".",
    "empty signature": f"{TOKEN}.",
    "empty token": f".{SIGNATURE}",
    "empty token, its genuine signature": f".{identity._mac('key', '')}",
    "extra dot": f"{TOKEN}.{SIGNATURE}.x",
    "two dots": f"{TOKEN}..{SIGNATURE}",
    "short signature": f"{TOKEN}.{SIGNATURE[:-1]}",
    "long signature": f"{TOKEN}.{SIGNATURE}0",
    "non-ascii signature": f"{TOKEN}.{SIGNATURE[:-1]}é",
    "all non-ascii signature": f"{TOKEN}.{'é' * len(SIGNATURE)}",
    "non-ascii token": f"{TOKEN[:-1]}é.{SIGNATURE}",
    "upper-case signature": f"{TOKEN}.{SIGNATURE.upper()}",
    "trailing newline": f"{GENUINE}\n",
    "nul in token": f"{TOKEN}\x00.{SIGNATURE}",
}


def test_a_minted_key_verifies_to_its_token():
    assert identity.verify(GENUINE) == TOKEN
    assert Identity("another-secret").verify(GENUINE) is None


@pytest.mark.parametrize("key", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_key_verifies_to_none(key):
    assert identity.verify(key) is None
