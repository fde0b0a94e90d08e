"""Synthetic traffic: reproducible Ethernet/VLAN/IPv4/IPv6/TCP/UDP packets, built as arrays.

The model, in brief. ``flows`` flows (fewer if there are fewer packets) open one after another,
evenly spread over the run; every packet after a flow's first belongs to an already open flow,
half the time picked uniformly (so early flows grow into elephants) and half the time with a
bias to the newest (bursts). A flow has a kind that sets its protocol, server port and packet
sizes: TCP bulk transfer (small client ACKs and requests, near-MTU server segments), TCP
interactive (small both ways), UDP request/response (DNS-like) and UDP media/QUIC (mid to
near-MTU). Flows are IPv4 or IPv6, some behind an 802.1Q tag and a few behind QinQ; about half
the TCP flows carry the timestamp option. Both directions of a flow appear (addresses, ports and
MACs swapped); TCP sequence and acknowledgement numbers follow the bytes each side has sent.
Inter-arrival gaps are exponential, so timestamps strictly increase. Frames shorter than the
Ethernet minimum are zero-padded to 60 bytes, as on the wire (``pad=False`` turns that off).
Every length and checksum is correct.

Everything is a function of the seed and the packet's index: per-packet draws come from a
counter-based hash, not a stateful generator, so ``generate_batch(n)`` and the concatenation of
``generate_batches(n, batch_packets=k)`` are the same packets for every ``k``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from engine.capture.batch import Interface, PacketBatch
from engine.capture.generate_kernels import build_frames, pack_templates
from engine.capture.writer import CaptureWriter

__all__ = ["DEFAULT_START_NS", "generate_batch", "generate_batches", "generate_capture"]

# 2024-01-01T00:00:00Z: a fixed default, so that a seed alone decides the output.
DEFAULT_START_NS = 1_704_067_200 * 1_000_000_000
DEFAULT_RATE_PPS = 100_000.0
MTU = 1500
ETH_MIN_FRAME = 60  # without the FCS, which captures do not hold

# Flow kinds and what they look like. Size classes: empty, small, mid, near-MTU.
BULK, INTERACTIVE, REQUEST, MEDIA = range(4)
_KIND_SHARE = (0.40, 0.20, 0.10, 0.30)
_KIND_TCP = np.array([True, True, False, False])
_KIND_TEXT_SHARE = np.array([0.3, 0.2, 0.0, 0.0])  # payloads from the text half of the pool
_KIND_DIR1_SHARE = np.array([0.6, 0.5, 0.5, 0.5])  # server-to-client share of packets
_SIZE_CLASS_P = np.array(
    [
        [[0.80, 0.15, 0.05, 0.00], [0.10, 0.05, 0.15, 0.70]],  # bulk: client, server
        [[0.45, 0.50, 0.05, 0.00], [0.40, 0.45, 0.10, 0.05]],  # interactive
        [[0.00, 1.00, 0.00, 0.00], [0.00, 0.60, 0.40, 0.00]],  # request/response
        [[0.00, 0.30, 0.40, 0.30], [0.00, 0.20, 0.30, 0.50]],  # media / QUIC
    ]
)
_SIZE_CLASS_CUM = np.cumsum(_SIZE_CLASS_P, axis=2)[:, :, :3]
_SERVER_PORTS = np.array(
    [  # per kind, equally likely
        [443, 443, 443, 80, 8080],
        [22, 22, 3389, 5222, 993],
        [53, 53, 53, 123, 161],
        [443, 443, 3478, 5004, 4500],
    ]
)
_V4_FIRST_OCTETS = np.array(
    [
        8,
        13,
        17,
        23,
        31,
        34,
        35,
        40,
        44,
        52,
        54,
        64,
        66,
        69,
        72,
        74,
        91,
        104,
        140,
        142,
        151,
        157,
        172,
        185,
        199,
        203,
        208,
        216,
    ]
)

_POOL_REGION = 1 << 17  # each half of the payload pool: text-like, then random bytes
_MAX_PAYLOAD = MTU - 20 - 8
_TEMPLATE = 96  # widest header: QinQ (22) + IPv6 (40) + TCP with timestamps (32)

_TEXT_TOKENS = (
    "GET",
    "POST",
    "/",
    "/index.html",
    "/api/v1/items",
    "HTTP/1.1",
    "200",
    "OK",
    "Host:",
    "example.com",
    "Accept:",
    "text/html",
    "application/json",
    "Content-Length:",
    "1024",
    "User-Agent:",
    "pktx/0.1",
    "Connection:",
    "keep-alive",
    '{"id":',
    "42,",
    '"name":',
    '"packet"}',
    "the",
    "a",
    "of",
    "to",
    "and",
    "exchange",
    "service",
    "stream",
    "segment",
    "worker",
    "provider",
    "credit",
    "auction",
    "rate",
    "block",
    "time",
    "<html>",
    "<p>",
    "</p>",
)


def generate_batch(
    packets: int,
    flows: int = 1000,
    seed: int = 0,
    *,
    start_ns: int = DEFAULT_START_NS,
    rate_pps: float = DEFAULT_RATE_PPS,
    ipv6_share: float = 0.3,
    vlan_share: float = 0.15,
    qinq_share: float = 0.05,
    pad: bool = True,
) -> PacketBatch:
    """``packets`` synthetic Ethernet frames in one compact batch (see the module docstring).

    ``flows`` is how many flows the traffic holds (all of them appear when there are at least
    that many packets); ``seed`` makes it reproducible. The first packet is at ``start_ns`` and
    the mean rate is ``rate_pps``. ``ipv6_share`` of the flows are IPv6, ``vlan_share`` carry one
    802.1Q tag and ``qinq_share`` two (802.1ad outside). For a million packets or more prefer
    ``generate_batches``, which holds one batch at a time.
    """
    gen = _Generator(
        packets, flows, seed, start_ns, rate_pps, ipv6_share, vlan_share, qinq_share, pad
    )
    return gen.next_batch(packets)


def generate_batches(
    packets: int, flows: int = 1000, seed: int = 0, batch_packets: int = 65536, **options
) -> Iterator[PacketBatch]:
    """The packets of ``generate_batch(packets, flows, seed, **options)``, ``batch_packets`` at
    a time, with ``first_seq`` numbering them across batches. Arguments are checked at once."""
    _check_int("batch_packets", batch_packets, 1)
    return _stream(_Generator(packets, flows, seed, **options), batch_packets)


def _stream(gen: _Generator, batch_packets: int) -> Iterator[PacketBatch]:
    while gen.done < gen.packets:
        yield gen.next_batch(batch_packets)


def generate_capture(
    path: str | os.PathLike,
    packets: int,
    flows: int = 1000,
    seed: int = 0,
    *,
    format: str = "pcap",
    ts_resolution: str = "us",
    batch_packets: int = 65536,
    progress: Callable[[int], None] | None = None,
    **options,
) -> int:
    """Write ``packets`` synthetic packets to a pcap or pcapng file; returns the count written.

    Batches stream through ``CaptureWriter``, so memory stays bounded; the file appears only
    once complete. ``ts_resolution`` is ``"us"`` (readable everywhere) or ``"ns"``. ``progress``,
    if given, is called with the number of packets written so far after each batch. Other
    keyword arguments are those of ``generate_batch``.
    """
    _check_int("batch_packets", batch_packets, 1)
    gen = _Generator(packets, flows, seed, **options)
    # The next batch is built on a second thread while this one is written: the kernel and the
    # file write both release the GIL, so on two cores the two overlap.
    with (
        CaptureWriter(path, format=format, ts_resolution=ts_resolution) as writer,
        ThreadPoolExecutor(1, thread_name_prefix="pktx-generate") as ahead,
    ):
        pending = ahead.submit(gen.next_batch, batch_packets) if packets else None
        while pending is not None:
            batch = pending.result()
            more = gen.done < gen.packets
            pending = ahead.submit(gen.next_batch, batch_packets) if more else None
            writer.write(batch)
            if progress is not None:
                progress(writer.packets)
    return writer.packets


class _Generator:
    """The flow table, the payload pool and the state carried from one batch to the next."""

    def __init__(
        self,
        packets: int,
        flows: int,
        seed: int,
        start_ns: int = DEFAULT_START_NS,
        rate_pps: float = DEFAULT_RATE_PPS,
        ipv6_share: float = 0.3,
        vlan_share: float = 0.15,
        qinq_share: float = 0.05,
        pad: bool = True,
    ) -> None:
        _check_int("packets", packets, 0)
        _check_int("flows", flows, 1)
        _check_int("seed", seed, 0)
        _check_int("start_ns", start_ns, 0)
        if not rate_pps > 0:
            raise ValueError(f"rate_pps must be positive, not {rate_pps}")
        for name, share in (
            ("ipv6_share", ipv6_share),
            ("vlan_share", vlan_share),
            ("qinq_share", qinq_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {share}")
        if vlan_share + qinq_share > 1.0:
            raise ValueError("vlan_share + qinq_share must not exceed 1")
        self.packets = int(packets)
        self.flows = max(1, min(int(flows), self.packets))
        self.seed = int(seed)
        self.mean_gap_ns = 1e9 / rate_pps
        self.min_frame = ETH_MIN_FRAME if pad else 0
        rng = np.random.default_rng([self.seed, 0x706B7478])
        self.pool = _payload_pool(rng)
        words = self.pool.view(">u2").astype(np.int64)
        self.pool_sums = np.zeros(len(words) + 1, np.int64)
        np.cumsum(words, out=self.pool_sums[1:])
        self.table = _FlowTable(self.flows, rng, ipv6_share, vlan_share, qinq_share)
        t = self.table
        self.seq = t.isn.copy()
        self.ipid = t.ipid0.copy()
        self.last_tsval = np.zeros(2 * self.flows, np.int64)
        self.done = 0
        self.clock_ns = int(start_ns)

    def _uniform(self, stream: int, idx: np.ndarray) -> np.ndarray:
        """Uniform [0, 1) draws for packets ``idx`` from stream ``stream`` of this seed."""
        key = _mix_int((self.seed << 8) ^ stream)
        x = _mix(idx.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(key))
        return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))

    def next_batch(self, count: int) -> PacketBatch:
        """The next ``count`` packets (fewer at the end of the run)."""
        plan = self.plan(count)
        if plan is None:
            return PacketBatch.empty()
        t = self.table
        data = np.empty(int(plan.offsets[-1] + plan.frame_len[-1]), np.uint8)
        build_frames(
            data,
            plan.offsets,
            plan.frame_len,
            plan.rows,
            plan.pay_len,
            plan.pay_off,
            plan.ts_ns // 1_000_000,
            t.templates,
            t.hdr_len,
            t.l2_len,
            t.ipv6,
            t.tcp,
            t.tsopt,
            self.pool,
            self.pool_sums,
            self.seq,
            self.ipid,
            t.tsval_base,
            self.last_tsval,
        )
        caplen = plan.frame_len.astype(np.uint32)
        return PacketBatch(
            data,
            plan.offsets,
            caplen,
            caplen.copy(),
            plan.ts_ns,
            interfaces=(Interface(1),),
            first_seq=plan.first,
        )

    def plan(self, count: int) -> _Plan | None:
        """Decide the next ``count`` packets (flow, direction, size, payload, time); advance."""
        first = self.done
        count = min(int(count), self.packets - first)
        if count <= 0:
            return None
        t = self.table
        idx = np.arange(first, first + count, dtype=np.int64)
        n_total, nf = self.packets, self.flows

        # Which flow: flow k opens at the first packet where idx * nf // n_total reaches k.
        newest = idx * nf // n_total
        opening = newest != (idx - 1) * nf // n_total
        u_pick, u_mode = self._uniform(1, idx), self._uniform(2, idx)
        span = newest + 1
        recent = newest - np.floor(span * u_pick**3).astype(np.int64)
        uniform = np.floor(span * u_pick).astype(np.int64)
        flow = np.where(opening, newest, np.where(u_mode < 0.5, uniform, recent))
        np.clip(flow, 0, newest, out=flow)
        kind = t.kind[flow]

        # Which direction (a flow's first packet is the client's), then how big.
        direction = np.where(opening, 0, self._uniform(3, idx) < _KIND_DIR1_SHARE[kind]).astype(
            np.int64
        )
        rows = 2 * flow + direction
        u_size = self._uniform(4, idx)
        size_class = (u_size[:, None] >= _SIZE_CLASS_CUM[kind, direction]).sum(axis=1)
        u = self._uniform(5, idx)
        max_pay = t.max_payload[flow]
        near_mtu = max_pay - np.where(u < 0.6, 0, np.floor((u - 0.6) * 250)).astype(np.int64)
        pay_len = np.select(
            [size_class == 0, size_class == 1, size_class == 2],
            [
                0,
                1 + np.floor(u**1.5 * 199).astype(np.int64),
                200 + np.floor(u * 800).astype(np.int64),
            ],
            near_mtu,
        )
        np.minimum(pay_len, max_pay, out=pay_len)
        region = np.where(t.text[flow], 0, _POOL_REGION)
        pay_off = region + 2 * np.floor(
            self._uniform(6, idx) * ((_POOL_REGION - _MAX_PAYLOAD) // 2)
        ).astype(np.int64)

        # When: exponential gaps of at least 1 ns; the very first packet is at start_ns.
        gaps = np.floor(-np.log1p(-self._uniform(7, idx)) * self.mean_gap_ns).astype(np.int64)
        gaps += 1
        if first == 0:
            gaps[0] = 0
        ts_ns = np.cumsum(gaps) + self.clock_ns

        frame_len = np.maximum(t.hdr_len[rows] + pay_len, self.min_frame)
        offsets = np.zeros(count, np.int64)
        np.cumsum(frame_len[:-1], out=offsets[1:])
        self.done += count
        self.clock_ns = int(ts_ns[-1])
        return _Plan(first, rows, pay_len, pay_off, ts_ns, frame_len, offsets)


class _Plan(NamedTuple):
    """What ``build_frames`` needs for a run of packets, besides the flow table and state."""

    first: int
    rows: np.ndarray  # the flow table row: 2 * flow + direction
    pay_len: np.ndarray
    pay_off: np.ndarray  # into the payload pool, even
    ts_ns: np.ndarray
    frame_len: np.ndarray
    offsets: np.ndarray


class _FlowTable:
    """Per flow and per direction: header templates and what the kernel needs to fill them.

    Row ``2 * f`` is flow ``f`` client to server, row ``2 * f + 1`` server to client.
    """

    def __init__(
        self,
        nf: int,
        rng: np.random.Generator,
        ipv6_share: float,
        vlan_share: float,
        qinq_share: float,
    ) -> None:
        f = np.arange(nf)
        self.kind = rng.choice(4, size=nf, p=_KIND_SHARE)
        self.text = rng.random(nf) < _KIND_TEXT_SHARE[self.kind]
        tcp_f = _KIND_TCP[self.kind]
        v6_f = rng.random(nf) < ipv6_share
        u_vlan = rng.random(nf)
        tags_f = np.where(u_vlan < qinq_share, 2, np.where(u_vlan < qinq_share + vlan_share, 1, 0))
        tsopt_f = tcp_f & (rng.random(nf) < 0.5)
        l3_f = np.where(v6_f, 40, 20)
        l4_f = np.where(tcp_f, np.where(tsopt_f, 32, 20), 8)
        self.max_payload = MTU - l3_f - l4_f

        # Hosts: about six flows per client, twenty per server. A client's flows differ in
        # source port, so every flow's 5-tuple is distinct.
        n_clients = -(-nf // 6)
        n_servers = -(-nf // 20)
        client = f % n_clients
        server = rng.integers(0, n_servers, nf)
        salt = rng.integers(0, 1 << 24)
        client_v4 = (10 << 24) | (((client * 0x9E3779B1) ^ salt) & 0xFFFFFF)
        server_v4 = (
            (rng.choice(_V4_FIRST_OCTETS, n_servers) << 24) | rng.integers(1, 1 << 24, n_servers)
        )[server]
        # Address and MAC tables, clients first: rows below pick from them by index.
        v6_table = np.zeros((n_clients + n_servers, 16), np.uint8)
        v6_table[:n_clients, 0] = 0xFD
        v6_table[:n_clients, 1:6] = rng.integers(0, 256, 5, dtype=np.uint8)  # one /48 site
        v6_table[:n_clients, 6:8] = _be(np.arange(n_clients) % 16, 2)  # subnet
        v6_table[:n_clients, 8:12] = rng.integers(0, 256, (n_clients, 4), dtype=np.uint8)
        v6_table[:n_clients, 12:16] = _be(np.arange(n_clients), 4)
        v6_table[n_clients:, 0:4] = (0x20, 0x01, 0x0D, 0xB8)
        v6_table[n_clients:, 4:16] = rng.integers(0, 256, (n_servers, 12), dtype=np.uint8)
        mac_table = _macs(rng, n_clients + 4)
        gateway = n_clients + rng.integers(0, 4, nf)
        client_port = (
            32768 + ((f // n_clients) * 4099 + rng.integers(0, 28232, n_clients)[client]) % 28232
        )
        server_port = _SERVER_PORTS[self.kind, rng.integers(0, _SERVER_PORTS.shape[1], nf)]
        vids = rng.integers(1, 4095, 8)[rng.integers(0, 8, nf)]
        outer_vids = rng.integers(1, 4095, 2)[rng.integers(0, 2, nf)]

        # Per row (direction): the flow's values, swapped for the server's side.
        nr = 2 * nf
        fr = np.repeat(f, 2)
        back = np.tile([False, True], nf)
        v6, tcp, tags = v6_f[fr], tcp_f[fr], tags_f[fr]
        self.ipv6, self.tcp = v6.astype(np.uint8), tcp.astype(np.uint8)
        self.tsopt = tsopt_f[fr].astype(np.uint8)
        self.l2_len = 14 + 4 * tags
        self.hdr_len = self.l2_len + l3_f[fr] + l4_f[fr]
        self.isn = rng.integers(0, 1 << 32, nr)
        self.ipid0 = rng.integers(0, 1 << 16, nr)
        self.tsval_base = rng.integers(0, 1 << 32, nr)

        # One block of fixed columns per layer; pack_templates butts each row's parts together.
        ethertype = np.where(v6, 0x86DD, 0x0800)
        vid, outer_vid = vids[fr], outer_vids[fr]
        l2 = np.zeros((nr, 22), np.uint8)
        l2[:, 0:6] = mac_table[np.where(back, client[fr], gateway[fr])]
        l2[:, 6:12] = mac_table[np.where(back, gateway[fr], client[fr])]
        l2[:, 12:14] = _be(np.select([tags == 0, tags == 1], [ethertype, 0x8100], 0x88A8), 2)
        l2[:, 14:16] = _be(np.where(tags == 1, vid, outer_vid), 2)
        l2[:, 16:18] = _be(np.where(tags == 1, ethertype, 0x8100), 2)
        l2[:, 18:20] = _be(vid, 2)
        l2[:, 20:22] = _be(ethertype, 2)

        # The client sends with an initial TTL; the server's packets arrive some hops lower.
        ttl = np.where(
            back,
            rng.choice([64, 128, 255], nr) - rng.integers(4, 24, nr),
            rng.choice([64, 128], nr),
        )
        proto = np.where(tcp, 6, 17)
        l3 = np.zeros((nr, 40), np.uint8)
        l3[:, 0] = 0x45
        l3[:, 6] = 0x40  # don't fragment
        l3[:, 8] = ttl
        l3[:, 9] = proto
        l3[:, 12:16] = _be(np.where(back, server_v4[fr], client_v4[fr]), 4)
        l3[:, 16:20] = _be(np.where(back, client_v4[fr], server_v4[fr]), 4)
        r6 = np.flatnonzero(v6)
        ip6 = np.zeros((len(r6), 40), np.uint8)
        ip6[:, 0:4] = _be((6 << 28) | rng.integers(1, 1 << 20, len(r6)), 4)  # flow label
        ip6[:, 6] = proto[r6]
        ip6[:, 7] = ttl[r6]
        client6, server6 = client[fr[r6]], n_clients + server[fr[r6]]
        ip6[:, 8:24] = v6_table[np.where(back[r6], server6, client6)]
        ip6[:, 24:40] = v6_table[np.where(back[r6], client6, server6)]
        l3[r6] = ip6

        # TCP and UDP share the ports; UDP's length and checksum are where TCP's seq is, zero.
        l4 = np.zeros((nr, 32), np.uint8)
        l4[:, 0:2] = _be(np.where(back, server_port[fr], client_port[fr]), 2)
        l4[:, 2:4] = _be(np.where(back, client_port[fr], server_port[fr]), 2)
        l4[:, 12] = np.where(tcp, np.where(self.tsopt, 0x80, 0x50), 0)  # data offset
        l4[:, 14:16] = _be(np.where(tcp, rng.integers(1024, 65536, nr), 0), 2)  # window
        l4[self.tsopt.astype(bool), 20:24] = (1, 1, 8, 10)  # NOP, NOP, timestamps

        self.templates = np.zeros((nr, _TEMPLATE), np.uint8)
        pack_templates(self.templates, l2, self.l2_len, l3, l3_f[fr], l4, l4_f[fr])


def _payload_pool(rng: np.random.Generator) -> np.ndarray:
    """Payload bytes: a text-like half (headers, JSON, words), then a random half."""
    tokens = np.array(_TEXT_TOKENS)
    words = tokens[rng.integers(0, len(tokens), _POOL_REGION // 3)]
    seps = np.array([" ", " ", " ", "\r\n"])[rng.integers(0, 4, len(words))]
    text = "".join(np.char.add(words, seps).tolist()).encode()[:_POOL_REGION]
    pool = np.empty(2 * _POOL_REGION, np.uint8)
    pool[:_POOL_REGION] = np.frombuffer(text.ljust(_POOL_REGION, b" "), np.uint8)
    pool[_POOL_REGION:] = rng.integers(0, 256, _POOL_REGION, dtype=np.uint8)
    return pool


def _macs(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` random locally administered unicast MAC addresses, as rows of 6 bytes."""
    macs = rng.integers(0, 256, (n, 6), dtype=np.uint8)
    macs[:, 0] = (macs[:, 0] & 0xFC) | 0x02
    return macs


def _be(values, nbytes: int) -> np.ndarray:
    """Integers as rows of ``nbytes`` big-endian bytes."""
    b = np.asarray(values, np.int64).astype(">u8").view(np.uint8).reshape(-1, 8)
    return b[:, 8 - nbytes :]


_M64 = (1 << 64) - 1


def _mix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer over uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _mix_int(x: int) -> int:
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
