"""The sealed box of a job's secret parameters (engine/daemon/sealing.py): it opens with the
provider's key for its award only; its layout is as docs/daemon.md says (opened here by hand
with the ``cryptography`` primitives, the oracle); a box that does not open says so without a
byte of what it holds; the key file is made 0600 and read back; a job's sealed parameters reach
``pktx deliver`` as environment variable names on its command line, never as values."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from engine.daemon.runs import BadSpec, NodeOptions, command, opened
from engine.daemon.sealing import SealingError, SealingKey, binding, seal

KEY_HEX = "ab" * 32
PARAMS = {"encrypt.key": KEY_HEX}


@pytest.fixture
def pair(tmp_path) -> SealingKey:
    return SealingKey.load_or_create(str(tmp_path / "sealing.key"))


def test_a_box_opens_with_the_key_for_its_award_only(pair, tmp_path):
    box = seal(pair.public, PARAMS, binding(7, 3))
    assert pair.open(box, binding(7, 3)) == PARAMS
    other = SealingKey(X25519PrivateKey.generate())
    flipped = bytearray(box)
    flipped[40] ^= 0x80
    for key, b, aad in (
        (pair, box, binding(8, 3)),  # another award
        (pair, box, binding(7, 4)),  # another provider
        (other, box, binding(7, 3)),  # another key
        (pair, bytes(flipped), binding(7, 3)),
    ):  # tampered with
        with pytest.raises(SealingError) as caught:
            key.open(b, aad)
        assert "do not open" in str(caught.value)
        assert KEY_HEX not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(SealingError, match="not a sealed box"):
        pair.open(box[:20], binding(7, 3))
    # A fresh ephemeral key each time: the same parameters never seal to the same bytes.
    assert seal(pair.public, PARAMS, binding(7, 3)) != box


def test_the_box_is_laid_out_as_documented(pair, tmp_path):
    box = seal(pair.public, PARAMS, binding(7, 3))
    assert box[0] == 1 and len(box) == 1 + 32 + len(json.dumps(PARAMS)) + 16
    private = serialization.load_pem_private_key(
        (tmp_path / "sealing.key").read_bytes(), password=None
    )
    ephemeral = box[1:33]
    recipient = base64.b64decode(pair.public)
    okm = HKDF(
        hashes.SHA256(),
        44,
        salt=None,
        info=b"pktx sealed service parameters v1" + ephemeral + recipient,
    ).derive(private.exchange(X25519PublicKey.from_public_bytes(ephemeral)))
    plain = ChaCha20Poly1305(okm[:32]).decrypt(
        okm[32:], box[33:], b"pktx-sealed-params award=7 provider=3"
    )
    assert json.loads(plain) == PARAMS


def test_the_key_file_is_made_private_and_read_back(pair, tmp_path):
    path = tmp_path / "sealing.key"
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = SealingKey.load_or_create(str(path))
    assert again.public == pair.public and len(again.fingerprint) == 16
    (tmp_path / "bad.key").write_text("not a key\n")
    with pytest.raises(SealingError, match="not a PEM private key"):
        SealingKey.load(str(tmp_path / "bad.key"))


def test_sealed_parameters_reach_the_delivery_by_name_only(pair, tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "in.pcap").write_bytes(b"")
    node = NodeOptions(
        files=str(files),
        sealing=pair,
        provider_id=3,
        params=("encrypt.key_env=NODE_KEY", "encrypt.bind=none"),
    )
    box = seal(pair.public, PARAMS, binding(7, 3))
    spec = {
        "award_id": 7,
        "source": "in.pcap",
        "sink": "o.pcap",
        "services": ["encrypt"],
        "sealed_params": ["encrypt.key"],
        "sealed": {"sealed_to": pair.public, "box": base64.b64encode(box).decode()},
    }
    secrets = opened(spec, node)
    assert secrets == PARAMS
    argv = command(spec, node, "/u.json", sealed=tuple(secrets))
    joined = " ".join(argv)
    # The sealed key replaces the node's own; the node's other parameters stay.
    assert "--param encrypt.key_env=PKTX_SEALED_0" in joined
    assert "NODE_KEY" not in joined and "--param encrypt.bind=none" in joined
    assert KEY_HEX not in joined
    assert opened({**spec, "sealed_params": []}, node) == {}
    for changed, says in (
        ({"sealed": None}, "brought none"),
        ({"award_id": 8}, "do not open"),
        ({"sealed_params": ["encrypt.key", "anonymize.key"]}, "other parameters"),
        ({"sealed": {**spec["sealed"], "sealed_to": "x"}}, "another key"),
    ):
        with pytest.raises(BadSpec, match=says) as caught:
            opened({**spec, **changed}, node)
        assert KEY_HEX not in str(caught.value)
    with pytest.raises(BadSpec, match="holds no sealing key"):
        opened(spec, NodeOptions(files=str(files)))
