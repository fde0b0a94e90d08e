"""encrypt / decrypt: exact round trips, valid packets between, tampering and wrong keys caught."""

from __future__ import annotations

import ipaddress
import os

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from payload_oracle import (
    KEY,
    break_checksums,
    eth,
    ip4,
    need_corpus,
    on_link,
    packets,
    read_only,
    scapy_disagreements,
    scapy_still_agrees,
    too_large_and_small,
    traffic,
)
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from engine.capture.batch import PacketBatch
from engine.packet.checksum import recompute_checksums, verify_checksums
from engine.services import ServiceError, build_chain, parse_chain
from engine.services.encryption import OVERHEAD, Decrypt, Encrypt
from engine.services.payload import select

OTHER_KEY = "ff" * 32


def pair(**params):
    spec = parse_chain("encrypt,decrypt", [f"key={KEY}", *(f"{k}={v}" for k, v in params.items())])
    return build_chain(spec)


def few() -> PacketBatch:
    pkts = [
        eth()
        / IP(src="10.1.2.3", dst="192.0.2.7")
        / TCP(sport=40000, dport=443, flags="PA")
        / Raw(b"secret"),
        eth()
        / IPv6(src="2001:db8::5", dst="2001:db8::9")
        / UDP(sport=5000, dport=6000)
        / Raw(b"another secret, longer"),
        eth() / IP(src="10.1.2.3", dst="192.0.2.7") / UDP(sport=1, dport=2) / Raw(b"x"),
    ]
    return PacketBatch.from_packets([bytes(p) for p in pkts])


def test_round_trip_is_exact_with_bad_checksums_and_read_only_buffers():
    batch = read_only(break_checksums(traffic(3000), seed=12))
    enc, dec = pair()
    sealed = enc.process(batch)
    before, after = verify_checksums(batch), verify_checksums(sealed)
    assert np.array_equal(before.ip, after.ip) and np.array_equal(before.l4, after.l4)
    assert dec.process(read_only(sealed)).same_packets(batch)
    a, b = enc.take_counters(), dec.take_counters()
    assert a["packets_encrypted"] == b["packets_decrypted"] == len(select(batch))
    assert a["bytes_encrypted"] == b["bytes_decrypted"]
    assert "auth_failures" not in b


def test_scapy_sees_valid_packets_after_encrypt():
    batch = traffic(400, seed=5)
    sealed = pair()[0].process(batch)
    assert scapy_disagreements(sealed) == []
    grew = sealed.caplen.astype(int) - batch.caplen
    assert set(np.unique(grew)) == {0, OVERHEAD}


def _aad(pkt) -> bytes:
    """The associated data as documented, built from scapy's view of the packet."""
    ip = pkt[IP] if IP in pkt else pkt[IPv6]
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    version = 4 if IP in pkt else 6
    addr = [ipaddress.ip_address(a).packed.ljust(16, b"\0") for a in (ip.src, ip.dst)]
    return (
        b"pktx-aes256gcm-2"
        + b"\xa5\xe6\x02"
        + bytes([version, 6 if TCP in pkt else 17])
        + addr[0]
        + addr[1]
        + l4.sport.to_bytes(2, "big")
        + l4.dport.to_bytes(2, "big")
    )


def test_payload_is_header_nonce_ciphertext_tag_as_documented():
    batch = few()
    sealed = pair()[0].process(batch)
    nonces = set()
    for i in range(len(batch)):
        pkt = Ether(sealed.packet(i).tobytes())
        l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
        load = bytes(l4.payload)
        original = bytes((Ether(batch.packet(i).tobytes())[l4.__class__]).payload)
        assert len(load) == len(original) + OVERHEAD == len(original) + 32
        assert load[:3] == b"\xa5\xe6\x02"
        nonce = load[3:15]
        nonces.add(nonce)
        plain = AESGCM(bytes.fromhex(KEY)).decrypt(nonce, load[15:], _aad(pkt))
        assert plain == b"\x00" + original  # flags byte, then the payload
    assert len(nonces) == len(batch)


def test_nonces_are_fresh_for_every_packet_and_every_run():
    batch = traffic(2000)
    enc = pair()[0]
    runs = [enc.process(batch), enc.process(batch)]
    sel = select(runs[0])
    nonces = {bytes(v[3:15]) for run in runs for v in select(run).payloads.views()}
    assert len(nonces) == 2 * len(sel)


def test_corpus_round_trips():
    for name, batch in need_corpus():
        for source in (batch, break_checksums(batch, seed=4, share=0.5)):
            enc, dec = pair()
            out = dec.process(enc.process(read_only(source)))
            assert packets(out) == packets(source), name
            assert "auth_failures" not in dec.take_counters(), name
        assert scapy_still_agrees(batch, pair()[0].process(batch)) == [], name


def _flip(batch: PacketBatch, row: int, at: int) -> PacketBatch:
    data = batch.data.copy()
    sel = select(batch)
    data[sel.payloads.starts[list(sel.index).index(row)] + at] ^= 0x01
    return PacketBatch(data, batch.offsets, batch.caplen, batch.origlen, batch.ts_ns)


@pytest.mark.parametrize("where", [0, 2, 3, 15, 20, -1])  # header, nonce, flags, payload, tag
def test_tampering_is_detected_and_the_packet_dropped(where):
    batch = few()
    enc, dec = pair()
    sealed = enc.process(batch)
    length = int(select(sealed).payloads.lengths[1])
    bad = _flip(sealed, 1, where % length)
    out = dec.process(bad)
    counters = dec.take_counters()
    assert counters["auth_failures"] == 1 and counters["dropped"] == 1
    assert out.seq.tolist() == [0, 2]
    assert packets(out) == [packets(batch)[0], packets(batch)[2]]


def test_tampered_packets_kept_when_asked():
    batch = few()
    enc, dec = pair(on_fail="keep")
    bad = _flip(enc.process(batch), 0, 15)
    out = dec.process(bad)
    assert dec.take_counters()["auth_failures"] == 1
    assert len(out) == 3 and out.packet(0).tobytes() == bad.packet(0).tobytes()
    assert packets(out)[1:] == packets(batch)[1:]


def test_wrong_key_fails_every_packet():
    batch = traffic(500)
    sealed = pair()[0].process(batch)
    dec = Decrypt(key=OTHER_KEY)
    out = dec.process(sealed)
    counters = dec.take_counters()
    assert counters["auth_failures"] == len(select(batch))
    assert len(out) == len(batch) - len(select(batch))


def test_decrypting_plaintext_fails_authentication():
    batch = few()
    dec = Decrypt(key=KEY)
    out = dec.process(batch)
    counters = dec.take_counters()
    assert counters["auth_failures"] == counters["not_encrypted"] == 3 and len(out) == 0


def _readdress(batch: PacketBatch) -> PacketBatch:
    """Every IPv4 source address changed (checksums recomputed), as NAT or anonymize would."""
    data = batch.data.copy()
    out = PacketBatch(data, batch.offsets, batch.caplen, batch.origlen, batch.ts_ns)
    for i in range(len(out)):
        p = out.packet(i)
        if p[12] == 0x08 and p[13] == 0x00:
            p[26] ^= 0x40
    recompute_checksums(out)
    return out


def test_flow_binding_rejects_a_moved_payload_and_none_accepts_it():
    batch = few()
    enc, dec = pair()
    moved = _readdress(enc.process(batch))
    assert len(dec.process(moved)) == 1  # only the IPv6 packet kept its addresses
    enc, dec = pair(bind="none")
    out = dec.process(_readdress(enc.process(batch)))
    assert packets(out) == packets(_readdress(batch))


def test_a_payload_too_large_to_encrypt_fails_by_default_on_every_link_type():
    batch, large = too_large_and_small()
    assert len(select(batch)) == len(batch)  # every packet is one encrypt takes
    with pytest.raises(
        ServiceError,
        match=r"service 'encrypt': the packet captured at "
        r".*number 1 of .* is too large to encrypt: 32 more bytes would not fit "
        rf"its length fields \({large - 1} more such packets\); "
        r"too_large=clear .* passes such packets in clear",
    ):
        pair()[0].process(batch)


def test_too_large_clear_on_both_sides_gives_back_every_packet_on_every_link_type():
    batch, large = too_large_and_small()
    enc, dec = pair(too_large="clear")
    sealed = enc.process(read_only(batch))
    grew = sealed.caplen.astype(int) - batch.caplen
    assert sorted(set(grew.tolist())) == [0, OVERHEAD]
    assert int((grew == 0).sum()) == large
    assert scapy_still_agrees(batch, sealed) == []
    out = dec.process(read_only(sealed))
    assert packets(out) == packets(batch)
    a, b = enc.take_counters(), dec.take_counters()
    assert a["passed_clear"] == b["passed_clear"] == a["skipped_too_large"] == large
    assert a["packets_encrypted"] == b["packets_decrypted"] == len(batch) - large
    assert "auth_failures" not in b and "not_encrypted" not in b


def test_decrypt_never_passes_a_clear_packet_that_could_have_been_encrypted():
    """An attacker who strips the encryption off a packet gains nothing from too_large=clear:
    only a payload too large to have been encrypted passes in clear."""
    batch, large = too_large_and_small()
    for on_fail in ("drop", "keep"):
        dec = Decrypt(key=KEY, too_large="clear", on_fail=on_fail)
        out = dec.process(batch)
        counters = dec.take_counters()
        assert counters["passed_clear"] == large
        assert counters["auth_failures"] == counters["not_encrypted"] == len(batch) - large
        assert len(out) == (large if on_fail == "drop" else len(batch))
    # Without the option a too-large clear packet is a failure like any other.
    dec = Decrypt(key=KEY)
    assert len(dec.process(batch)) == 0
    assert dec.take_counters()["not_encrypted"] == len(batch)


def test_a_too_large_payload_that_looks_encrypted_cannot_pass_in_clear():
    ip = ip4(65535, fill=lambda n: b"\xa5\xe6\x02" + bytes(n - 3))
    batch = PacketBatch.from_packets([on_link(1, ip4(100)), on_link(1, ip)])
    with pytest.raises(
        ServiceError,
        match=r"number 1 of 2 .* cannot pass in clear either: its "
        r"payload begins like an encrypted one",
    ):
        Encrypt(key=KEY, too_large="clear").process(batch)


def test_corpus_through_encrypt_decrypt_loses_nothing_with_too_large_packets_added():
    """The real captures, each with the too-large packets of every link type added: with
    too_large=clear on both sides the chain gives back every packet."""
    extra, large = too_large_and_small()
    for name, corpus_batch in need_corpus():
        batch = PacketBatch.concat([corpus_batch, extra])
        enc, dec = pair(too_large="clear")
        out = dec.process(enc.process(batch))
        assert packets(out) == packets(batch), name
        assert dec.take_counters()["passed_clear"] == large, name


@pytest.mark.parametrize(
    "params, message",
    [
        ({}, "parameter key is required"),
        ({"key": "00" * 16}, "16 bytes, expected 32"),
        ({"key": "zz" * 32}, "not a hex string"),
        ({"key": KEY, "bind": "ports"}, "bind must be one of"),
    ],
)
def test_bad_parameters(params, message):
    for cls in (Encrypt, Decrypt):
        with pytest.raises(ServiceError, match=message):
            cls(**params)
    with pytest.raises(ServiceError, match="on_fail must be one of"):
        Decrypt(key=KEY, on_fail="ignore")
    with pytest.raises(ServiceError, match="unknown parameter"):
        Encrypt(key=KEY, on_fail="drop")


def test_random_key_round_trip_through_the_chain_parser():
    key = os.urandom(32).hex()
    enc, dec = build_chain(parse_chain("encrypt,decrypt", [f"key={key}"]))
    batch = traffic(300)
    assert dec.process(enc.process(batch)).same_packets(batch)
