"""``pktx bench services``: the payload services in one process against the bare library loop
over the same payloads, so the table shows what a worker spends around the cipher or codec.

The packets: a generated capture (200,000 packets by default) cut into the engine's
2048-packet segments. "bare AES-GCM" is ``AESGCM.encrypt``/``decrypt`` called in a Python loop
over exactly the plaintexts the service encrypts (the flags byte and the payload), with
12-byte nonces and associated data of the service's width (``bind=flow``), prepared
beforehand; "bare lz4" is ``lz4.block.compress``/``decompress`` over the payloads. The
services start from the segments and return the new segments (lengths and checksums fixed).
Times are CPU seconds of this process (``time.process_time``: on shared machines wall time
counts the neighbours too), best of ``repeat``, the rows of a pair measured in turn.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable

import numpy as np

from benchmarks.report import PACKET_RATE, SECONDS, WHAT, Column, Report, main

KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
SEGMENT = 2048
TARGET = 0.5  # issue 8: a service at least half the speed of the bare cipher loop


def segments(packets: int, seed: int = 42) -> list:
    from engine.capture.generate import generate_batch

    batch = generate_batch(packets, flows=1000, seed=seed)
    out = [batch[a : a + SEGMENT].compact() for a in range(0, len(batch), SEGMENT)]
    for s in out:
        s.data.flags.writeable = False  # as a worker receives them
    return out


def cipher_inputs(segs: list) -> tuple[list, list, list]:
    """Per payload the service encrypts: a nonce, its plaintext and associated data."""
    from engine.services.encryption import _aad_width, _associated_data
    from engine.services.payload import select

    plains, aads = [], []
    for s in segs:
        sel = select(s)
        aad = np.empty((len(sel), _aad_width(True)), np.uint8)
        _associated_data(sel, True, aad)
        for i, v in enumerate(sel.payloads.views()):
            plains.append(bytes([int(sel.payloads.flags[i])]) + bytes(v))
            aads.append(aad[i].tobytes())
    return [os.urandom(12) for _ in plains], plains, aads


def best_of(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def measure(packets: int = 200_000, repeat: int = 5, report: Report | None = None) -> dict:
    """Seconds per row, and what the rows covered (its steps on ``report``'s bar)."""
    steps = report or Report("services")
    steps.expect_steps(2 + repeat)
    with steps.step("preparing the segments and payloads"):
        segs = segments(packets)
        prepared = _prepare(segs)
    with steps.step("compiling and warming"):
        pairs = _pairs(*prepared)
        for svc_fn, bare_fn in pairs.values():
            svc_fn()
            bare_fn()
    gc.collect()
    gc.freeze()  # the prepared inputs are millions of objects: no collector passes over them
    try:
        times = {name: [float("inf"), float("inf")] for name in pairs}
        for i in range(repeat):
            with steps.step(f"round {i + 1} of {repeat}"):
                for name, (svc_fn, bare_fn) in pairs.items():
                    times[name][0] = min(times[name][0], best_of(svc_fn, 1))
                    times[name][1] = min(times[name][1], best_of(bare_fn, 1))
    finally:
        gc.unfreeze()
    plains = prepared[2]
    return {
        "times": times,
        "packets": sum(len(s) for s in segs),
        "payloads": len(plains),
        "payload_bytes": sum(len(p) - 1 for p in plains),
    }


def _prepare(segs: list) -> tuple:
    import lz4.block
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from engine.services.compression import Compress
    from engine.services.encryption import Encrypt

    nonces, plains, aads = cipher_inputs(segs)
    aead = AESGCM(bytes.fromhex(KEY))
    sealed_payloads = [aead.encrypt(n, p, a) for n, p, a in zip(nonces, plains, aads)]
    raw = [p[1:] for p in plains]
    packed = [lz4.block.compress(p, store_size=False) for p in raw]
    sealed = [Encrypt(key=KEY).process(s) for s in segs]
    squeezed = [Compress().process(s) for s in segs]
    for s in (*sealed, *squeezed):
        s.data.flags.writeable = False
    return (segs, nonces, plains, aads, aead, sealed_payloads, raw, packed, sealed, squeezed)


def _pairs(segs, nonces, plains, aads, aead, sealed_payloads, raw, packed, sealed, squeezed):
    """The timed pairs: each service over the segments, and its bare library loop."""
    import lz4.block

    from engine.services.compression import Compress, Decompress
    from engine.services.encryption import Decrypt, Encrypt

    enc, dec = Encrypt(key=KEY), Decrypt(key=KEY)
    comp, decomp = Compress(), Decompress()

    def loop(fn, *columns):
        def bare():
            for args in zip(*columns):
                fn(*args)

        return bare

    def service(svc, inputs):
        return lambda: [svc.process(s) for s in inputs]

    pairs = {
        "encrypt": (service(enc, segs), loop(aead.encrypt, nonces, plains, aads)),
        "decrypt": (service(dec, sealed), loop(aead.decrypt, nonces, sealed_payloads, aads)),
        "compress": (
            service(comp, segs),
            loop(lambda p: lz4.block.compress(p, store_size=False), raw),
        ),
        "decompress": (
            service(decomp, squeezed),
            loop(lambda c, p: lz4.block.decompress(c, uncompressed_size=len(p)), packed, raw),
        ),
    }
    return pairs


def run(packets: int = 200_000, repeat: int = 5, stream_gb: float = 0.0, *, report: Report) -> int:
    """Fill the report; ``stream_gb`` (the capture table's) does not apply."""
    del stream_gb
    from engine.capture import backend

    load_before = os.getloadavg()
    r = measure(packets, repeat, report=report)
    n, nbytes = r["packets"], r["payload_bytes"]
    table = report.sheet(
        f"pktx bench services: {n:,} generated packets, {r['payloads']:,} "
        f"payloads ({nbytes / 1e6:.1f} MB) in {SEGMENT}-packet segments, one "
        f"process, CPU seconds, best of {repeat}",
        [
            WHAT,
            SECONDS,
            PACKET_RATE,
            Column("payload_bytes_per_s", "payload MB/s", "bytes/s", lambda v: f"{v / 1e6:,.0f}"),
            Column("of_bare", "vs bare", "ratio", "{:.0%} of bare"),
        ],
    )
    labels = {
        "encrypt": ("encrypt service (AES-256-GCM)", "bare AESGCM.encrypt loop"),
        "decrypt": ("decrypt service", "bare AESGCM.decrypt loop"),
        "compress": ("compress service (lz4)", "bare lz4.block.compress loop"),
        "decompress": ("decompress service", "bare lz4.block.decompress loop"),
    }
    for name, (svc_s, bare_s) in r["times"].items():
        svc_label, bare_label = labels[name]
        ratio = bare_s / svc_s
        table.add_row(svc_label, svc_s, n / svc_s, nbytes / svc_s, ratio)
        table.add_row(bare_label, bare_s, n / bare_s, nbytes / bare_s, "reference")
        if name in ("encrypt", "decrypt"):
            report.check(
                f"{name} service >= {TARGET:.0%} of the bare AES-GCM loop", ratio >= TARGET
            )
    report.machine(
        load_before=" ".join(f"{x:.2f}" for x in load_before), backend=backend.describe()
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main("services", run))
