"""pytest-benchmark layer over `benchmarks.services_table` (not in the default test run).

    python -m pytest benchmarks/test_bench_services.py --benchmark-only

The services and the bare library loops are benchmarked over the same generated segments;
issue 8's target (a service at least half the bare AES-GCM loop's speed) rides along in
``extra_info``, measured, not asserted. What is asserted holds at any speed: the services
give back every packet, and encrypt's payloads open with the library itself.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks import services_table as st
from engine.capture.batch import PacketBatch
from engine.services.compression import Compress, Decompress
from engine.services.encryption import BODY_AT, HEADER, Decrypt, Encrypt
from engine.services.payload import select

PACKETS = 50_000


@pytest.fixture(scope="module")
def segs():
    return st.segments(PACKETS)


@pytest.fixture(scope="module")
def inputs(segs):
    return st.cipher_inputs(segs)


def _all(svc, segs):
    return [svc.process(s) for s in segs]


def test_encrypt_service(benchmark, segs):
    enc = Encrypt(key=st.KEY)
    sealed = benchmark.pedantic(_all, args=(enc, segs), rounds=3, iterations=1)
    benchmark.extra_info.update(packets=PACKETS, target_share_of_bare=st.TARGET)
    dec = Decrypt(key=st.KEY)
    assert PacketBatch.concat(_all(dec, sealed)).same_packets(PacketBatch.concat(segs))
    sel = select(sealed[0])
    pkt = PacketBatch.concat(segs[:1])
    first = select(pkt).payloads
    v = bytes(sel.payloads.views()[0])
    assert v[: len(HEADER)] == HEADER
    aad = bytearray(st.cipher_inputs(segs[:1])[2][0])
    plain = AESGCM(bytes.fromhex(st.KEY)).decrypt(v[len(HEADER) : BODY_AT], v[BODY_AT:], bytes(aad))
    assert plain[1:] == bytes(first.views()[0])


def test_bare_aesgcm_encrypt_loop(benchmark, inputs):
    aead = AESGCM(bytes.fromhex(st.KEY))
    nonces, plains, aads = inputs

    def loop():
        for args in zip(nonces, plains, aads):
            aead.encrypt(*args)

    benchmark.pedantic(loop, rounds=3, iterations=1)
    benchmark.extra_info.update(payloads=len(plains))


def test_decrypt_service(benchmark, segs):
    sealed = _all(Encrypt(key=st.KEY), segs)
    dec = Decrypt(key=st.KEY)
    opened = benchmark.pedantic(_all, args=(dec, sealed), rounds=3, iterations=1)
    assert PacketBatch.concat(opened).same_packets(PacketBatch.concat(segs))
    assert "auth_failures" not in dec.take_counters()


def test_compress_decompress_services(benchmark, segs):
    squeezed = benchmark.pedantic(_all, args=(Compress(), segs), rounds=3, iterations=1)
    back = _all(Decompress(), squeezed)
    assert PacketBatch.concat(back).same_packets(PacketBatch.concat(segs))
