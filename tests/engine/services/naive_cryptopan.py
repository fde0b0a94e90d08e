"""A slow, obvious Crypto-PAn: one AES call per address bit, plain Python ints.

Written from the description of the scheme (Fan, Xu, Ammar, Moon, "Prefix-preserving IP
address anonymization", 2004) and the reference implementation's conventions, not from
``engine.services.anonymize``: the first 16 key bytes are the AES-128 key, the last 16 are
encrypted once to give the pad. Bit ``i`` of the result (counting from the most significant)
is bit ``i`` of the address XOR the top bit of AES(the address's first ``i`` bits followed by
the pad's bits ``i`` onwards). An IPv4 address takes the place of the top 32 of the 128 bits.
"""

from __future__ import annotations

import ipaddress

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


class NaiveCryptoPAn:
    def __init__(self, key: bytes) -> None:
        assert len(key) == 32
        self._aes = Cipher(algorithms.AES(key[:16]), modes.ECB()).encryptor()
        self._pad = int.from_bytes(self._encrypt(key[16:]), "big")

    def _encrypt(self, block: bytes) -> bytes:
        return self._aes.update(block)

    def anonymize_int(self, addr: int, bits: int) -> int:
        """Anonymize the ``bits``-bit address ``addr`` (32 for IPv4, 128 for IPv6)."""
        full = addr << (128 - bits)
        result = 0
        for i in range(bits):
            keep = ((1 << i) - 1) << (128 - i)  # the top i bits
            block = (full & keep) | (self._pad & ~keep & ((1 << 128) - 1))
            out = self._encrypt(block.to_bytes(16, "big"))
            bit = (out[0] >> 7) ^ ((addr >> (bits - 1 - i)) & 1)
            result = (result << 1) | bit
        return result

    def anonymize(self, text: str) -> str:
        """Anonymize an address written as text (IPv4 dotted quad or IPv6)."""
        ip = ipaddress.ip_address(text)
        bits = 32 if ip.version == 4 else 128
        kind = ipaddress.IPv4Address if ip.version == 4 else ipaddress.IPv6Address
        return str(kind(self.anonymize_int(int(ip), bits)))

    def anonymize_bytes(self, raw: bytes) -> bytes:
        """Anonymize a packed address (4 bytes IPv4, 16 bytes IPv6)."""
        bits = 8 * len(raw)
        return self.anonymize_int(int.from_bytes(raw, "big"), bits).to_bytes(len(raw), "big")
