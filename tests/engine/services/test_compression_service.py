"""compress / decompress: exact round trips, valid packets between, a header decompress trusts
only when it decodes."""

from __future__ import annotations

import struct

import lz4.block
import numpy as np
import pytest
import zstandard
from payload_oracle import (
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
from engine.packet.checksum import verify_checksums
from engine.services import ServiceError, build_chain, parse_chain
from engine.services.compression import HEADER_SIZE, MAGIC, Compress, Decompress
from engine.services.payload import select

CODECS = ["lz4", "zstd"]
TEXT = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nAccept: text/html\r\n\r\n" * 12


def chatty() -> PacketBatch:
    """Compressible payloads over TCP and UDP, IPv4 and IPv6, plus one incompressible."""
    pkts = [
        eth()
        / IP(src="10.0.0.1", dst="10.0.0.2")
        / TCP(sport=40000, dport=80, flags="PA")
        / Raw(TEXT),
        eth()
        / IPv6(src="2001:db8::1", dst="2001:db8::2")
        / UDP(sport=5353, dport=53)
        / Raw(TEXT[:301]),
        eth() / IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=1, dport=2) / Raw(bytes(range(256))),
    ]
    return PacketBatch.from_packets([bytes(p) for p in pkts])


def chain(codec: str, **params):
    spec = parse_chain(
        "compress,decompress", [f"codec={codec}", *(f"{k}={v}" for k, v in params.items())]
    )
    return build_chain(spec)


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip_is_exact_on_generated_traffic_with_bad_checksums(codec):
    batch = read_only(break_checksums(traffic(3000), seed=8))
    comp, dec = chain(codec)
    squeezed = comp.process(batch)
    status = verify_checksums(batch), verify_checksums(squeezed)
    assert np.array_equal(status[0].ip, status[1].ip)
    assert np.array_equal(status[0].l4, status[1].l4)
    assert dec.process(read_only(squeezed)).same_packets(batch)
    a, b = comp.take_counters(), dec.take_counters()
    assert a["packets_compressed"] + a["packets_stored"] == len(select(batch))
    assert (b["packets_decompressed"], b["packets_stored"]) == (
        a["packets_compressed"],
        a["packets_stored"],
    )
    assert (a["bytes_before"], a["bytes_after"]) == (b["bytes_after"], b["bytes_before"])
    assert "errors" not in b and "not_wrapped" not in b


@pytest.mark.parametrize("codec", CODECS)
def test_compressible_payloads_shrink_and_scapy_sees_valid_packets(codec):
    batch = chatty()
    comp, dec = chain(codec)
    out = comp.process(batch)
    assert out.caplen[0] < batch.caplen[0] and out.caplen[1] < batch.caplen[1]
    assert out.caplen[2] == batch.caplen[2] + HEADER_SIZE  # stored
    counters = comp.take_counters()
    assert counters["packets_compressed"] == 2 and counters["packets_stored"] == 1
    assert counters["bytes_after"] < counters["bytes_before"]
    assert scapy_disagreements(out) == []
    assert dec.process(out).same_packets(batch)


@pytest.mark.parametrize("codec", CODECS)
def test_scapy_sees_valid_packets_after_compress_on_generated_traffic(codec):
    out = chain(codec)[0].process(traffic(400, seed=21))
    assert scapy_disagreements(out) == []


@pytest.mark.parametrize("codec, level", [("lz4", 9), ("zstd", 19), ("zstd", -3)])
def test_levels(codec, level):
    batch = traffic(500)
    comp, dec = chain(codec, level=level)
    assert dec.process(comp.process(batch)).same_packets(batch)


def test_header_format_decodes_with_the_codecs_themselves():
    batch = chatty()
    for codec, number in (("lz4", 1), ("zstd", 2)):
        out = chain(codec)[0].process(batch)
        pkt = Ether(out.packet(0).tobytes())
        load = bytes(pkt[TCP].payload)
        magic, kind, flags, original = struct.unpack("!2sBBH", load[:HEADER_SIZE])
        assert (magic, kind >> 4, kind & 0x0F, flags, original) == (MAGIC, 1, number, 0, len(TEXT))
        body = load[HEADER_SIZE:]
        if codec == "lz4":
            assert lz4.block.decompress(body, uncompressed_size=original) == TEXT
        else:
            assert zstandard.ZstdDecompressor().decompress(body, max_output_size=original) == TEXT
        stored = bytes(Ether(out.packet(2).tobytes())[UDP].payload)
        assert stored[2] == 0x10 and stored[HEADER_SIZE:] == bytes(range(256))


@pytest.mark.parametrize("codec", CODECS)
def test_corpus_round_trips(codec):
    for name, batch in need_corpus():
        for source in (batch, break_checksums(batch, seed=6, share=0.5)):
            comp, dec = chain(codec)
            out = dec.process(comp.process(read_only(source)))
            assert packets(out) == packets(source), name
            assert np.array_equal(out.origlen, source.origlen), name
        assert scapy_still_agrees(batch, chain(codec)[0].process(batch)) == [], name


def test_decompress_leaves_payloads_without_the_header_alone():
    batch = traffic(1000)
    dec = Decompress()
    out = dec.process(batch)
    assert out.same_packets(batch)
    counters = dec.take_counters()
    assert counters["not_wrapped"] == len(select(batch))
    assert "errors" not in counters


def _corrupt(out: PacketBatch, row: int, at: int, value: int) -> PacketBatch:
    """``out`` with byte ``at`` of packet ``row``'s TCP/UDP payload set to ``value``."""
    data = out.data.copy()
    sel = select(out)
    data[sel.payloads.starts[list(sel.index).index(row)] + at] = value
    return PacketBatch(
        data,
        out.offsets,
        out.caplen,
        out.origlen,
        out.ts_ns,
        out.iface,
        out.interfaces,
        out.first_seq,
    )


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("on_error", ["keep", "drop"])
def test_corrupt_payloads_are_counted_and_kept_or_dropped(codec, on_error):
    batch = chatty()
    comp, dec = chain(codec, on_error=on_error)
    out = comp.process(batch)
    bad = _corrupt(out, 0, 5, 0xFF)  # original length: low byte
    bad = _corrupt(bad, 1, HEADER_SIZE + 1, 0x00)  # inside the compressed body
    bad = _corrupt(bad, 2, 2, 0x1F)  # an unknown codec
    result = dec.process(bad)
    counters = dec.take_counters()
    assert counters["errors"] >= 2 and counters["errors"] <= 3
    failed = counters["errors"]
    if on_error == "keep":
        assert len(result) == 3 and counters.get("dropped", 0) == 0
        assert result.packet(0).tobytes() == bad.packet(0).tobytes()
        assert result.packet(2).tobytes() == bad.packet(2).tobytes()
    else:
        assert len(result) == 3 - failed and counters["dropped"] == failed
        assert result.has_explicit_seq and 0 not in result.seq.tolist()
        assert 2 not in result.seq.tolist()


@pytest.mark.parametrize(
    "params, message",
    [
        ({"codec": "brotli"}, "codec must be one of"),
        ({"level": "fast"}, "level"),
        ({"level": "13"}, "level must be in 0..12 for lz4"),
        ({"codec": "zstd", "level": "40"}, "level must be in -7..22 for zstd"),
    ],
)
def test_bad_compress_parameters(params, message):
    with pytest.raises(ServiceError, match=message):
        Compress(**params)


def test_bad_decompress_parameters():
    with pytest.raises(ServiceError, match="on_error must be one of"):
        Decompress(on_error="ignore")
    with pytest.raises(ServiceError, match="unknown parameter"):
        Decompress(codec="lz4")


def _noise(seed: int):
    rng = np.random.default_rng(seed)
    return lambda n: rng.bytes(n)


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_incompressible_payloads_too_large_to_wrap_come_back_on_every_link_type(codec):
    """The largest packets with random payloads: compressing grows them, the stored form (6
    bytes more) does not fit, so compress passes them as they are and decompress leaves them
    alone."""
    batch, large = too_large_and_small(_noise(5))
    c, d = build_chain(parse_chain("compress,decompress", [f"codec={codec}"]))
    out = d.process(c.process(read_only(batch)))
    assert packets(out) == packets(batch)
    a, b = c.take_counters(), d.take_counters()
    assert a["skipped_too_large"] == b["not_wrapped"] == large
    assert "errors" not in b


def test_a_too_large_payload_that_looks_wrapped_fails_rather_than_being_changed():
    """Passed as it is, a payload beginning with a stored wrapper's header of the right length
    would lose its first 6 bytes in decompress: compress refuses it."""
    noise = _noise(6)

    def fill(n):
        return MAGIC + bytes([0x10, 0]) + struct.pack(">H", n - HEADER_SIZE) + noise(n - 6)

    batch = PacketBatch.from_packets([on_link(1, ip4(300)), on_link(1, ip4(65535, fill=fill))])
    assert len(Decompress().process(batch).packet(1)) == len(batch.packet(1)) - 6  # the trap
    with pytest.raises(
        ServiceError,
        match=r"service 'compress': the packet captured at .* "
        r"\(number 1 of 2 in its segment, 65549 bytes\) is "
        r"too large to wrap, and its payload begins like a "
        r"wrapped one",
    ):
        Compress().process(batch)
