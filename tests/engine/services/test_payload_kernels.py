"""The payload kernels against the numpy code they replaced (``payload_naive``), and encrypt /
decrypt against their old per-packet loop (``encryption_naive``): the same bytes, the same
counters, on generated traffic, every corpus capture, too-large and truncated packets."""

from __future__ import annotations

from collections import Counter

import encryption_naive
import numpy as np
import payload_naive
import pytest
from payload_oracle import (
    KEY,
    break_checksums,
    corpus_batches,
    packets,
    read_only,
    too_large_and_small,
    traffic,
)

from engine.capture.batch import PacketBatch
from engine.packet.payload_kernels import _region_sums
from engine.services.encryption import Decrypt, Encrypt
from engine.services.payload import Payloads, pack_behind, replace, reserve, select

OTHER_KEY = "ff" * 32


def cut(batch: PacketBatch, seed: int = 0, share: float = 0.3) -> PacketBatch:
    """A copy with about ``share`` of the packets captured short (caplen < origlen), some of
    them inside their headers."""
    rng = np.random.default_rng(seed)
    caplen = batch.caplen.copy()
    rows = np.flatnonzero((rng.random(len(batch)) < share) & (caplen > 1))
    caplen[rows] = rng.integers(1, caplen[rows])
    return PacketBatch(
        batch.data.copy(),
        batch.offsets,
        caplen,
        batch.origlen.copy(),
        batch.ts_ns,
        batch.iface,
        batch.interfaces,
    )


def lied(batch: PacketBatch, seed: int = 0, share: float = 0.1) -> PacketBatch:
    """A copy where about ``share`` of the packets have a random IP or UDP length field (too
    long, too short, zero): malformed for ``select``."""
    rng = np.random.default_rng(seed)
    out = PacketBatch(
        batch.data.copy(),
        batch.offsets,
        batch.caplen,
        batch.origlen,
        batch.ts_ns,
        batch.iface,
        batch.interfaces,
    )
    sel = select(out)
    rows = np.flatnonzero(rng.random(len(sel)) < share)
    for j in rows.tolist():
        at = int(sel._l3[j]) + (2 if sel._v4[j] else 4)
        if sel._udp[j] and rng.random() < 0.5:
            at = int(sel._l4[j]) + 4
        value = int(rng.choice([0, 7, 8, 0xFFFF, int(rng.integers(0, 0x10000))]))
        out.data[at : at + 2] = np.frombuffer(value.to_bytes(2, "big"), np.uint8)
    return out


def cases() -> list[tuple[str, PacketBatch]]:
    gen = traffic(3000, seed=11)
    large, _ = too_large_and_small()
    out = [
        ("generated", break_checksums(gen, seed=3)),
        ("generated-cut", cut(gen, 1)),
        ("generated-lied", lied(gen, 2)),
        ("too-large", large),
        ("too-large-cut", cut(large)),
    ]
    for name, batch in corpus_batches():
        out += [(name, batch), (f"{name}-cut", cut(batch, 5))]
    return out


CASES = cases()
IDS = [name for name, _ in CASES]


@pytest.fixture(params=range(len(CASES)), ids=IDS)
def batch(request) -> PacketBatch:
    return CASES[request.param][1]


def test_select_finds_what_the_numpy_version_found(batch):
    new, old = select(batch), payload_naive.select(batch)
    assert new.skipped == old.skipped
    assert new.index.tolist() == old.index.tolist()
    for name in ("starts", "lengths", "flags"):
        assert getattr(new.payloads, name).tolist() == getattr(old.payloads, name).tolist(), name
    for name in ("_l3", "_l4", "_end", "_v4", "_udp", "_ip_len", "_seg", "_link_at", "_link_max"):
        assert getattr(new, name).tolist() == getattr(old, name).tolist(), name


def _new_payloads(sel, rng) -> tuple[Payloads, np.ndarray]:
    """Random payloads, shorter and longer than the old, some empty; a random changed mask."""
    m = len(sel)
    lengths = np.maximum(sel.payloads.lengths + rng.integers(-40, 60, m), 0)
    lengths[rng.random(m) < 0.05] = 0
    pieces = [rng.bytes(int(n)) for n in lengths]
    flags = rng.integers(0, 4, m).astype(np.uint8)
    return Payloads.pack(pieces, flags), rng.random(m) < 0.8


def test_replace_writes_what_the_numpy_version_wrote(batch):
    rng = np.random.default_rng(len(batch))
    for changed in (None, "random"):
        sel, ref = select(read_only(batch)), payload_naive.select(read_only(batch))
        new, mask = _new_payloads(sel, rng)
        mask = None if changed is None else mask
        out, done = replace(sel, new, mask)
        want, want_done = payload_naive.replace(ref, new, mask)
        assert done.tolist() == want_done.tolist()
        assert sel.skipped == ref.skipped
        assert packets(out) == packets(want)
        assert out.caplen.tolist() == want.caplen.tolist()
        assert out.origlen.tolist() == want.origlen.tolist()


def test_reserve_then_fill_is_replace(batch):
    """Filling the room ``reserve`` leaves and calling ``finish`` gives what ``replace`` gives
    with the same payloads (lengths, both checksums, trailers)."""
    rng = np.random.default_rng(7)
    sel = select(read_only(batch))
    m = len(sel)
    lead = rng.integers(0, 256, (m, 5), dtype=np.uint8)
    lengths = np.maximum(sel.payloads.lengths + rng.integers(-20, 40, m), 5)
    rest = [rng.bytes(int(n) - 5) for n in lengths]
    res = reserve(sel, lengths, lead)
    for j in np.flatnonzero(res.done).tolist():
        at = int(res.at[j])
        assert res.batch.data[at : at + 5].tobytes() == lead[j].tobytes()
        res.batch.data[at + 5 : at + int(lengths[j])] = np.frombuffer(rest[j], np.uint8)
    out = res.finish()
    want, done = payload_naive.replace(
        payload_naive.select(read_only(batch)),
        Payloads.pack([lead[j].tobytes() + rest[j] for j in range(m)]),
    )
    assert res.done.tolist() == done.tolist()
    assert packets(out) == packets(want)


@pytest.mark.parametrize("seed", range(5))
def test_region_sums_match_word_by_word(seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, 20_000, dtype=np.uint8)
    data[:4000] = 0xFF  # long runs of the largest words
    lengths = rng.integers(0, 1500, 200).astype(np.int64)
    lengths[:8] = [0, 1, 2, 3, 4, 5, 7, 4000]
    starts = rng.integers(0, len(data) - lengths).astype(np.int64)
    starts[7] = 0
    out = np.empty(len(starts), np.int64)
    _region_sums(data, starts, lengths, out)
    assert out.tolist() == payload_naive._sums(data, starts, lengths).tolist()


def test_pack_behind_lays_out_lead_payload_and_room():
    rng = np.random.default_rng(1)
    pieces = [rng.bytes(int(n)) for n in rng.integers(0, 50, 40)]
    src = Payloads.pack(pieces)
    lead = rng.integers(0, 256, (40, 3), dtype=np.uint8)
    room = rng.integers(0, 20, 40)
    out = pack_behind(lead, src, src.lengths + 3 + room)
    for i, p in enumerate(pieces):
        at = int(out.starts[i])
        assert int(out.lengths[i]) == len(p) + 3 + room[i]
        assert out.data[at : at + 3 + len(p)].tobytes() == lead[i].tobytes() + p
    with pytest.raises(ValueError, match="hold its lead"):
        pack_behind(lead, src, src.lengths)


# -- encrypt / decrypt against the old per-packet loop ----------------------------------------


def _nonces(seed: int):
    rng = np.random.default_rng(seed)
    return rng.bytes


CIPHERS = ["segment", "per-packet"]


def _cipher(svc, cipher: str):
    """``svc`` with the cipher path asked for: libcrypto over the whole segment
    (ext._aesgcm), or cryptography's call per packet (a build without it)."""
    from engine.services import encryption

    if cipher == "segment" and encryption.Gcm is None:
        pytest.skip("ext._aesgcm was not built (no OpenSSL headers)")
    if cipher == "per-packet":
        svc._segment_cipher = None
    return svc


def _pair(cls, seed=0, **params):
    """Two instances of the service, one for the new code and one for the old, with the same
    nonce source."""
    a, b = cls(key=KEY, **params), cls(key=KEY, **params)
    a._random, b._random = _nonces(seed), _nonces(seed)
    return a, b


def _same(out: PacketBatch, want: PacketBatch) -> None:
    assert packets(out) == packets(want)
    assert out.seq.tolist() == want.seq.tolist()
    assert out.caplen.tolist() == want.caplen.tolist()
    assert out.origlen.tolist() == want.origlen.tolist()


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("bind", ["flow", "none"])
def test_encrypt_and_decrypt_write_what_the_per_packet_loop_wrote(batch, bind, cipher):
    enc, old_enc = _pair(Encrypt, bind=bind, too_large="clear")
    dec, old_dec = _pair(Decrypt, bind=bind, too_large="clear")
    _cipher(enc, cipher), _cipher(dec, cipher)
    for _ in range(2):  # the kept nonce and associated-data rows are reused
        sealed = enc.process(read_only(batch))
        _same(sealed, encryption_naive.encrypt(old_enc, read_only(batch)))
        opened = dec.process(read_only(sealed))
        _same(opened, encryption_naive.decrypt(old_dec, read_only(sealed)))
        assert enc.take_counters() == old_enc.take_counters()
        assert dec.take_counters() == old_dec.take_counters()


def test_encrypt_fails_on_a_too_large_payload_as_before():
    batch, _ = too_large_and_small()
    enc, old = _pair(Encrypt)
    with pytest.raises(Exception) as new_error:
        enc.process(batch)
    with pytest.raises(Exception) as old_error:
        encryption_naive.encrypt(old, batch)
    assert str(new_error.value) == str(old_error.value)


def _tamper(batch: PacketBatch, seed: int) -> PacketBatch:
    """A copy with one byte flipped in about a tenth of the payloads, anywhere in them."""
    rng = np.random.default_rng(seed)
    data = batch.data.copy()
    sel = select(batch)
    for j in np.flatnonzero(rng.random(len(sel)) < 0.1).tolist():
        data[int(sel.payloads.starts[j]) + int(rng.integers(sel.payloads.lengths[j]))] ^= 0x20
    return PacketBatch(
        data, batch.offsets, batch.caplen, batch.origlen, batch.ts_ns, batch.iface, batch.interfaces
    )


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("on_fail", ["drop", "keep"])
@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_authentication_failures_are_counted_and_dropped_as_before(batch, on_fail, key, cipher):
    sealed = _cipher(Encrypt(key=KEY, too_large="clear"), cipher).process(batch)
    for source in (_tamper(sealed, 4), batch):  # damaged and plain traffic
        dec, old = Decrypt(key=key, on_fail=on_fail), Decrypt(key=key, on_fail=on_fail)
        _cipher(dec, cipher)
        _same(dec.process(read_only(source)), encryption_naive.decrypt(old, read_only(source)))
        counters = dec.take_counters()
        assert counters == old.take_counters()
        if len(select(source)) and (source is batch or key == OTHER_KEY):
            assert counters["auth_failures"] > 0
        if key == OTHER_KEY:
            assert counters.get("packets_decrypted", 0) == 0


@pytest.mark.parametrize("cipher", CIPHERS)
def test_decrypt_picks_out_the_failed_packets_among_good_ones(cipher):
    """Failures at the first, the last and neighbouring packets: the resumed cipher loop
    (or the segment cipher) marks exactly those."""
    batch = traffic(400, seed=9)
    sealed = Encrypt(key=KEY).process(batch)
    sel = select(sealed)
    data = sealed.data.copy()
    bad = [0, 1, 2, 17, 18, len(sel) - 2, len(sel) - 1]
    for j in bad:
        data[int(sel.payloads.starts[j] + sel.payloads.lengths[j]) - 1] ^= 1  # the tag
    damaged = PacketBatch(data, sealed.offsets, sealed.caplen, sealed.origlen, sealed.ts_ns)
    dec = _cipher(Decrypt(key=KEY), cipher)
    out = dec.process(damaged)
    counters = Counter(dec.take_counters())
    assert counters["auth_failures"] == counters["dropped"] == len(bad)
    kept = sorted(set(range(len(batch))) - {int(sel.index[j]) for j in bad})
    assert out.seq.tolist() == kept
    assert packets(out) == [packets(batch)[i] for i in kept]
