# cython: language_level=3
"""AES-256-GCM over a whole segment in one call: libcrypto's EVP interface, one context per
direction kept by the service, a new nonce per packet, no Python between packets.

The output is what ``cryptography``'s ``AESGCM.encrypt`` writes (ciphertext, then the 16-byte
tag) and ``decrypt`` authenticates exactly as ``AESGCM.decrypt`` does; the services compare
both against per-packet oracles in the tests. Built only where OpenSSL's headers are found
(see setup.py); without it the services call ``cryptography`` once per packet.
"""

from libc.stdint cimport int64_t


cdef extern from "openssl/evp.h" nogil:
    ctypedef struct EVP_CIPHER_CTX:
        pass
    ctypedef struct EVP_CIPHER:
        pass
    ctypedef struct ENGINE:
        pass
    EVP_CIPHER_CTX *EVP_CIPHER_CTX_new()
    void EVP_CIPHER_CTX_free(EVP_CIPHER_CTX *ctx)
    const EVP_CIPHER *EVP_aes_256_gcm()
    int EVP_EncryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_EncryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_EncryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_DecryptInit_ex(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *cipher, ENGINE *impl,
                           const unsigned char *key, const unsigned char *iv)
    int EVP_DecryptUpdate(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl,
                          const unsigned char *inp, int inl)
    int EVP_DecryptFinal_ex(EVP_CIPHER_CTX *ctx, unsigned char *out, int *outl)
    int EVP_CIPHER_CTX_ctrl(EVP_CIPHER_CTX *ctx, int type, int arg, void *ptr)
    int EVP_CTRL_GCM_GET_TAG
    int EVP_CTRL_GCM_SET_TAG


DEF NONCE = 12
DEF TAG = 16


cdef class Gcm:
    """AES-256-GCM with one key, for whole segments (``seal`` and ``open``)."""

    cdef EVP_CIPHER_CTX *enc
    cdef EVP_CIPHER_CTX *dec

    def __cinit__(self, const unsigned char[::1] key):
        if key.shape[0] != 32:
            raise ValueError("AES-256-GCM takes a 32-byte key")
        self.enc = EVP_CIPHER_CTX_new()
        self.dec = EVP_CIPHER_CTX_new()
        if self.enc == NULL or self.dec == NULL:
            raise MemoryError()
        if (EVP_EncryptInit_ex(self.enc, EVP_aes_256_gcm(), NULL, &key[0], NULL) != 1
                or EVP_DecryptInit_ex(self.dec, EVP_aes_256_gcm(), NULL, &key[0], NULL) != 1):
            raise RuntimeError("libcrypto refused the AES-256-GCM key")

    def __dealloc__(self):
        if self.enc != NULL:
            EVP_CIPHER_CTX_free(self.enc)
        if self.dec != NULL:
            EVP_CIPHER_CTX_free(self.dec)

    def seal(self, const unsigned char[:, ::1] nonces, const unsigned char[:, ::1] aad,
             const int64_t[::1] rows, const unsigned char[::1] plain,
             const int64_t[::1] p0, const int64_t[::1] p1, unsigned char[::1] out,
             const int64_t[::1] at):
        """For each k: encrypt ``plain[p0[k]:p1[k]]`` under nonce and associated data row
        ``rows[k]``, writing ciphertext then tag at ``out[at[k]:]``."""
        cdef Py_ssize_t n = rows.shape[0], k
        cdef int64_t r, a, b, o
        cdef int outl, fin
        cdef int aad_len = <int>aad.shape[1]
        if nonces.shape[1] != NONCE or p0.shape[0] != n or p1.shape[0] != n or at.shape[0] != n:
            raise ValueError("seal: mismatched arguments")
        for k in range(n):  # every bound checked before libcrypto writes anything
            r, a, b, o = rows[k], p0[k], p1[k], at[k]
            if (r < 0 or r >= nonces.shape[0] or r >= aad.shape[0] or a < 0 or b < a
                    or b > plain.shape[0] or o < 0 or o + (b - a) + TAG > out.shape[0]):
                raise ValueError(f"seal: packet {k} out of bounds")
        with nogil:
            for k in range(n):
                r, a, b, o = rows[k], p0[k], p1[k], at[k]
                if EVP_EncryptInit_ex(self.enc, NULL, NULL, NULL, &nonces[r, 0]) != 1:
                    break
                if aad_len and EVP_EncryptUpdate(self.enc, NULL, &outl, &aad[r, 0],
                                                 aad_len) != 1:
                    break
                outl = 0
                if b > a and EVP_EncryptUpdate(self.enc, &out[o], &outl, &plain[a],
                                               <int>(b - a)) != 1:
                    break
                if EVP_EncryptFinal_ex(self.enc, &out[o + outl], &fin) != 1:
                    break
                if EVP_CIPHER_CTX_ctrl(self.enc, EVP_CTRL_GCM_GET_TAG, TAG,
                                       &out[o + (b - a)]) != 1:
                    break
            else:
                k = n
        if k != n:
            raise RuntimeError(f"libcrypto failed to encrypt packet {k}")

    def open(self, const unsigned char[:, ::1] nonces, const unsigned char[:, ::1] aad,
             const unsigned char[::1] data, const int64_t[::1] c0, const int64_t[::1] c1,
             unsigned char[::1] plain, const int64_t[::1] q0, unsigned char[::1] ok):
        """For each k: authenticate and decrypt ``data[c0[k]:c1[k]]`` (ciphertext, then the
        tag) under nonce and associated data row k, the plaintext to ``plain[q0[k]:]``;
        ``ok[k]`` says whether it authenticated. Returns how many did not."""
        cdef Py_ssize_t n = c0.shape[0], k
        cdef int64_t a, b, q, m
        cdef int outl, fin
        cdef int aad_len = <int>aad.shape[1]
        cdef Py_ssize_t failed = 0
        cdef int broke = 0
        if (nonces.shape[1] != NONCE or nonces.shape[0] < n or aad.shape[0] < n
                or c1.shape[0] != n or q0.shape[0] != n or ok.shape[0] != n):
            raise ValueError("open: mismatched arguments")
        for k in range(n):
            a, b, q = c0[k], c1[k], q0[k]
            if (a < 0 or b - a < TAG or b > data.shape[0] or q < 0
                    or q + (b - a - TAG) > plain.shape[0]):
                raise ValueError(f"open: packet {k} out of bounds")
        with nogil:
            for k in range(n):
                a, b, q = c0[k], c1[k], q0[k]
                m = b - a - TAG
                if EVP_DecryptInit_ex(self.dec, NULL, NULL, NULL, &nonces[k, 0]) != 1:
                    broke = 1
                    break
                if aad_len and EVP_DecryptUpdate(self.dec, NULL, &outl, &aad[k, 0],
                                                 aad_len) != 1:
                    broke = 1
                    break
                outl = 0
                if m > 0 and EVP_DecryptUpdate(self.dec, &plain[q], &outl, &data[a],
                                               <int>m) != 1:
                    broke = 1
                    break
                # The expected tag, then the check (EVP_DecryptFinal_ex fails on a mismatch).
                if EVP_CIPHER_CTX_ctrl(self.dec, EVP_CTRL_GCM_SET_TAG, TAG,
                                       <void *>&data[a + m]) != 1:
                    broke = 1
                    break
                if EVP_DecryptFinal_ex(self.dec, &plain[q + outl], &fin) == 1:
                    ok[k] = 1
                else:
                    ok[k] = 0
                    failed += 1
        if broke:
            raise RuntimeError(f"libcrypto failed to decrypt packet {k}")
        return failed
