"""Secret parameters (keys): given by file or environment variable, never shown."""

from __future__ import annotations

import logging
import os

import pytest
from payload_oracle import KEY, traffic

from engine.services import ServiceError, build_chain, parse_chain, public_chain
from engine.services.anonymize import Anonymize
from engine.services.encryption import Encrypt

OTHER = "0f" * 32


def _key_file(tmp_path, text=KEY + "\n", mode=0o600):
    path = tmp_path / "aes.key"
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_key_file_and_key_env_give_the_same_service_as_key(tmp_path, monkeypatch):
    monkeypatch.setenv("PKTX_TEST_KEY", f"  {KEY}  ")
    batch = traffic(200)
    path = _key_file(tmp_path)
    for params in ([f"key_file={path}"], ["key_env=PKTX_TEST_KEY"]):
        enc, dec = build_chain(parse_chain("encrypt,decrypt", params))
        assert enc.config["key"] == bytes.fromhex(KEY)
        assert dec.process(enc.process(batch)).same_packets(batch)
    # The spec that travels to workers holds the key itself: a worker has no such file.
    spec = parse_chain("anonymize", [f"key_file={path}"])
    assert spec == [{"name": "anonymize", "params": {"key": KEY}}]
    assert Anonymize(key_file=str(path)).config["key"] == bytes.fromhex(KEY)


def test_public_chain_hides_every_secret():
    spec = parse_chain(
        "anonymize,encrypt", [f"anonymize.key={OTHER}", f"encrypt.key={KEY}", "bind=none"]
    )
    shown = str(public_chain(spec))
    assert KEY not in shown and OTHER not in shown
    assert public_chain(spec)[1] == {
        "name": "encrypt",
        "params": {"key": "(secret)", "bind": "none"},
    }


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (["key_file={missing}"], "parameter key_file: cannot read {missing}: No such file"),
        (["key_file={short}"], "parameter key_file={short}: 16 bytes, expected 32"),
        (["key_file={garbage}"], "parameter key_file={garbage}: not a hex string"),
        (["key_file={empty}"], "parameter key_file: {empty} is empty"),
        (
            ["key_env=PKTX_NO_SUCH_VARIABLE"],
            "environment variable PKTX_NO_SUCH_VARIABLE is not set",
        ),
        ([f"key={KEY}", "key_file={short}"], "give parameter key once, not as key and key_file"),
        ([KEY], "parameter 1 of 1 is not KEY=VALUE"),
        ([], "key_file=PATH or key_env=VARIABLE"),
    ],
)
def test_bad_secrets_are_named_but_never_shown(tmp_path, params, message):
    files = {
        "missing": tmp_path / "nope.key",
        "short": _key_file(tmp_path, "ab" * 16),
        "empty": tmp_path / "empty.key",
        "garbage": tmp_path / "garbage.key",
    }
    files["empty"].write_text("\n")
    files["garbage"].write_text(KEY[:-2] + "zz")
    params = [p.format(**files) for p in params]
    with pytest.raises(ServiceError) as err:
        parse_chain("encrypt", params)
    assert message.format(**files) in str(err.value)
    assert KEY not in str(err.value) and "ab" * 16 not in str(err.value)
    assert KEY[:-2] not in str(err.value)


def test_a_key_file_others_can_read_is_warned_about(tmp_path, caplog):
    path = _key_file(tmp_path, mode=0o644)
    with caplog.at_level(logging.WARNING):
        Encrypt(key_file=str(path))
    assert "can be read by other users (mode 0644)" in caplog.text
    assert KEY not in caplog.text
