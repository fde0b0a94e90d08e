"""anonymize: Crypto-PAn prefix-preserving anonymization of IPv4 and IPv6 addresses.

The scheme (J. Fan, J. Xu, M. Ammar, S. Moon, "Prefix-preserving IP address anonymization",
Computer Networks 46(2), 2004) maps addresses one-to-one so that two addresses sharing exactly
their first k bits map to two sharing exactly their first k bits. Bit i of the result is bit i
of the address XOR the top bit of AES-128(the address's first i bits, then the pad's bits from
i on). The key is 32 bytes as in the reference implementation: the first 16 are the AES key,
the last 16 are encrypted once to make the pad. IPv4 addresses give the reference
distribution's published results; IPv6 addresses use the same construction over 128 bits, as
the common implementations do (Yawning Angel's Go ``cryptopan``, ``yacryptopan``).

What is rewritten: the source and destination of each packet's **outermost** IP header (as
``engine.packet.flowkeys`` finds it behind the link layer, VLAN tags, MPLS, PPPoE). Left alone:
addresses of tunnelled inner packets, of IP headers quoted in ICMP errors, in IPv6 routing
headers, in IPv4 options, and in ARP/RARP, which is not IP. Every fragment of a datagram gets
the same mapping, so reassembly still works.

A capture cut short (a small snaplen) may end inside an IP header, with an address whole or in
part before the cut. Such a packet is not IP to the flow-key parser, but its addresses must not
go through in clear: the bytes present are rewritten as the first bytes of the address's
anonymized form. Crypto-PAn makes that exact: bit i of a result depends only on the first i
bits of the address, so the bytes before the cut are what the whole address would have given.
Checksums of such a header are left as they are: they cover bytes that were not captured.

Checksums are updated incrementally (RFC 1624): the IPv4 header checksum and the TCP, UDP,
UDP-Lite, DCCP and ICMPv6 checksums whose pseudo-header holds the addresses (with an IPv6
routing header that has segments left, the pseudo-header's destination is the final one, which
is not rewritten). A checksum that was wrong before, as in captures taken with checksum
offload, is exactly as wrong after; a UDP checksum of 0 (none sent) stays 0. An IPsec AH
integrity check over the addresses cannot be fixed and is not.
"""

from __future__ import annotations

from itertools import islice
from typing import cast

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from engine.capture import backend
from engine.capture.batch import PacketBatch
from engine.packet.flowkeys import flow_keys
from engine.packet.header_kernels import _rewrite_addresses
from engine.services.base import Param, Service, hex_key
from engine.services.payload import packed_starts

__all__ = ["Anonymize", "CryptoPAn"]

# Bounds on memory: addresses remembered per family, and AES blocks built per ECB call.
CACHE_ADDRESSES = 1 << 16
_CHUNK_BLOCKS = 1 << 18  # 4 MiB of blocks


def _prefix_masks() -> np.ndarray:
    """Row i: 16 bytes whose top i bits are set (i from 0 to 128)."""
    bits = np.arange(128)[None, :] < np.arange(129)[:, None]
    return np.packbits(bits, axis=1)


_MASKS = _prefix_masks()


class CryptoPAn:
    """Crypto-PAn over packed addresses, many at a time, remembering recent results.

    ``anonymize(addrs)`` takes an ``(m, 4)`` (IPv4) or ``(m, 16)`` (IPv6) ``uint8`` array. Each
    distinct address not remembered costs 32 or 128 AES blocks, and all of a call's blocks go
    through one ECB call (chunked only past 4 MiB), not one Python-level call per bit.
    """

    def __init__(self, key: bytes, cache_size: int = CACHE_ADDRESSES) -> None:
        if len(key) != 32:
            raise ValueError(f"Crypto-PAn needs a 32-byte key, not {len(key)} bytes")
        self._aes = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor()
        pad = np.frombuffer(self._aes.update(key[16:]), np.uint8)
        # Row i: the pad's bits from i on, the top i bits clear (filled from the address).
        self._pad_tail = pad[None, :] & ~_MASKS[:128]
        self._cache: dict[int, dict] = {4: {}, 16: {}}
        self.cache_size = cache_size
        self.computed = 0  # distinct addresses run through AES, over the object's life

    def anonymize(self, addrs: np.ndarray) -> np.ndarray:
        """The anonymized addresses, row for row."""
        addrs = np.ascontiguousarray(addrs, np.uint8)
        if addrs.ndim != 2 or addrs.shape[1] not in (4, 16):
            raise ValueError(f"expected an (m, 4) or (m, 16) address array, not {addrs.shape}")
        width = addrs.shape[1]
        if len(addrs) == 0:
            return addrs.copy()
        rows, inverse = _distinct(addrs)
        cache = self._cache[width]
        names = rows.view(np.uint32 if width == 4 else "V16").ravel().tolist()
        found = [cache.get(k) for k in names]
        missing = [j for j, v in enumerate(found) if v is None]
        if missing:
            fresh = self._compute(rows[missing])
            self._remember(cache, [names[j] for j in missing], fresh)
            for j, row in zip(missing, fresh, strict=True):
                found[j] = row.tobytes()
        # Every None was filled just above.
        table = np.frombuffer(b"".join(cast("list[bytes]", found)), np.uint8).reshape(-1, width)
        return table[inverse]

    def anonymize_text(self, address: str) -> str:
        """One address written as text (for people and tests, not for hot paths)."""
        import ipaddress

        ip = ipaddress.ip_address(address)
        out = self.anonymize(np.frombuffer(ip.packed, np.uint8)[None, :])[0]
        return str(ipaddress.ip_address(out.tobytes()))

    def _compute(self, addrs: np.ndarray) -> np.ndarray:
        width = addrs.shape[1]
        bits = 8 * width
        self.computed += len(addrs)
        out = np.empty_like(addrs)
        step = max(1, _CHUNK_BLOCKS // bits)
        for lo in range(0, len(addrs), step):
            part = addrs[lo : lo + step]
            full = np.zeros((len(part), 16), np.uint8)
            full[:, :width] = part
            # Block (a, i): the address's top i bits, then the pad's bits from i on.
            blocks = (full[:, None, :] & _MASKS[None, :bits]) | self._pad_tail[None, :bits]
            enc = np.frombuffer(self._aes.update(blocks.tobytes()), np.uint8)
            prf = (enc[::16] >> 7).reshape(len(part), bits)
            out[lo : lo + step] = part ^ np.packbits(prf, axis=1)
        return out

    def _remember(self, cache: dict, keys: list, values: np.ndarray) -> None:
        excess = len(cache) + len(keys) - self.cache_size
        if excess > 0:  # forget the oldest entries first (dicts keep insertion order)
            for k in list(islice(cache, excess)):
                del cache[k]
        for k, row in islice(zip(keys, values, strict=True), self.cache_size):
            cache[k] = row.tobytes()


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _distinct(addrs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of ``addrs`` and, per row, the index of its distinct row.

    IPv6 rows are sorted by a 64-bit mix of their halves, far faster than sorting 16-byte
    strings; the grouping is then checked and redone exactly in the unlikely case of a clash.
    """
    if addrs.shape[1] == 4:
        keys = addrs.view(np.uint32).ravel()
    else:
        halves = addrs.view(np.uint64)
        with np.errstate(over="ignore"):
            keys = (halves[:, 0] * _GOLDEN) ^ halves[:, 1]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rows = addrs[first]
    inverse = inverse.reshape(-1)
    if addrs.shape[1] == 16 and not np.array_equal(rows[inverse], addrs):
        _, first, inverse = np.unique(
            addrs.view("V16").ravel(), return_index=True, return_inverse=True
        )
        rows = addrs[first]
        inverse = inverse.reshape(-1)
    return rows, inverse


class Anonymize(Service):
    """Crypto-PAn anonymization of the outermost IP header's addresses (see the module doc).

    Counters: ``addresses`` rewritten (two per IP packet), ``addresses_computed`` (distinct
    addresses not remembered from earlier batches, run through AES), ``packets_changed`` (IP
    packets), ``cut_headers`` (of those, packets whose IP header was cut short by the capture,
    their address bytes before the cut rewritten) and ``packets_skipped`` (no IP address
    found: other link types, ARP, packets cut before the addresses).
    """

    name = "anonymize"
    summary = "Crypto-PAn prefix-preserving anonymization of IPv4/IPv6 addresses"
    params = (
        Param(
            "key",
            hex_key(32),
            help="32 bytes in hex: AES-128 key, then the pad's seed",
            secret=True,
        ),
    )

    def setup(self) -> None:
        self.cryptopan = CryptoPAn(self.config["key"])

    def process(self, batch: PacketBatch) -> PacketBatch:
        n = len(batch)
        if n == 0:
            return batch
        out = batch.compact()
        # A new buffer: the input may be a read-only view of a received frame, or shared.
        data = out.data.copy() if out is batch else out.data
        out = PacketBatch(
            data,
            out.offsets,
            out.caplen,
            out.origlen,
            out.ts_ns,
            out.iface,
            out.interfaces,
            out.first_seq,
            out.seq if out.has_explicit_seq else None,
        )
        keys = flow_keys(out)
        src = keys.src
        dst = keys.dst
        before = self.cryptopan.computed
        for family, width in ((4, 4), (6, 16)):
            rows = np.flatnonzero(keys.family == family)
            if len(rows):
                mapped = self.cryptopan.anonymize(
                    np.concatenate([src[rows, :width], dst[rows, :width]])
                )
                src[rows, :width] = mapped[: len(rows)]
                dst[rows, :width] = mapped[len(rows) :]
        changed = _rewrite_addresses(
            data,
            out.offsets,
            out.caplen,
            keys.family,
            keys.proto,
            keys.l3_off,
            keys.l4_off,
            keys.fragment,
            src,
            dst,
        )
        cut = np.flatnonzero((keys.family == 0) & (out.caplen < out.origlen))
        if len(cut):
            found = self._cut_headers(out, cut)
            self.counters["cut_headers"] += found
            changed += found
        self.counters["addresses"] += 2 * changed
        self.counters["addresses_computed"] += self.cryptopan.computed - before
        self.counters["packets_changed"] += changed
        self.counters["packets_skipped"] += n - changed
        return out

    def _cut_headers(self, out: PacketBatch, rows: np.ndarray) -> int:
        """Rewrite the address bytes present in packets cut inside their IP header; how many
        had any. The parser is shown each packet padded with zeros past the cut, so it finds
        the header; only bytes before the cut are written."""
        pad = 64  # longer than any IP header
        caplen = out.caplen[rows].astype(np.int64)
        starts = packed_starts(caplen + pad)
        data = np.zeros(int((caplen + pad).sum()), np.uint8)
        backend.capture.gather(
            np.ascontiguousarray(out.data),
            out.offsets[rows],
            caplen.astype(np.uint32),
            data,
            starts,
        )
        padded = PacketBatch(
            data,
            starts,
            (caplen + pad).astype(np.uint32),
            out.origlen[rows],
            out.ts_ns[rows],
            out.iface[rows],
            out.interfaces,
        )
        keys = flow_keys(padded)
        found = 0
        for family, width, at in ((4, 4, 12), (6, 16, 8)):
            hit = np.flatnonzero(keys.family == family)
            # Where the source address starts (the destination follows it): before the cut?
            first = keys.l3_off[hit].astype(np.int64) + at
            present = first < caplen[hit]
            hit, first = hit[present], first[present]
            if not len(hit):
                continue
            mapped = self.cryptopan.anonymize(
                np.concatenate([keys.src[hit, :width], keys.dst[hit, :width]])
            )
            for j, (k, a) in enumerate(zip(hit.tolist(), first.tolist())):
                base = int(out.offsets[rows[k]])
                new = np.concatenate([mapped[j], mapped[len(hit) + j]])
                n = min(2 * width, int(caplen[k]) - a)
                out.data[base + a : base + a + n] = new[:n]
            found += len(hit)
        return found
