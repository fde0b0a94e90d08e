"""Live capture from a Linux interface: a memory-mapped AF_PACKET receive ring (TPACKET_V3).

The kernel writes frames into blocks of a ring shared with us and hands a block over (retires
it) when it is full or ``retire_ms`` after its first frame; ``PacketRing.read_block`` copies a
retired block's frames into one PacketBatch with a numba kernel and gives the block back. Times
are the kernel's, in nanoseconds. ``stats()`` adds up the kernel's own counts
(``PACKET_STATISTICS``): packets it saw and packets it dropped because the ring was full.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import mmap
import os
import select
import socket
import struct
import threading

import numpy as np

from engine.capture.batch import DEFAULT_SNAPLEN, Interface, PacketBatch, linktype_name
from engine.capture.ring_kernels import _walk_block
from engine.errors import EngineError

# linux/if_packet.h and linux/if_ether.h
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_MR_PROMISC = 1
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
IFF_UP = 0x1

# Layouts, as data: name, struct format (native order, as the kernel writes them)
TPACKET_REQ3 = struct.Struct("=7I")  # block_size, block_nr, frame_size, frame_nr, retire_blk_tov,
#                                      sizeof_priv, feature_req_word
TPACKET_STATS_V3 = struct.Struct("=3I")  # tp_packets (dropped ones included), tp_drops,
#                                          tp_freeze_q_cnt
PACKET_MREQ = struct.Struct("=iHH8s")  # ifindex, type, alen, address
SOCK_FILTER = struct.Struct("=HBBI")  # code, jt, jf, k
SOCK_FPROG = struct.Struct("=HxxxxxxQ")  # len, pointer to the filter (64-bit)
# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1's block_status,
# num_pkts, offset_to_first_pkt, blk_len (byte offsets 8, 12, 16, 20)
_BLOCK_STATUS, _NUM_PKTS, _FIRST_PKT, _BLK_LEN = 2, 3, 4, 5  # in 32-bit words
FRAME_SIZE = 2048  # nominal: TPACKET_V3 packs frames of any size; the kernel only checks it
BPF_RET_K = 0x06

# ARPHRD_* (/sys/class/net/NAME/type) -> the link type of what a SOCK_RAW packet socket reads
ARPHRD_LINKTYPES = {
    1: 1,  # ETHER -> EN10MB
    772: 1,  # LOOPBACK: Ethernet headers of zeros -> EN10MB
    519: 101,  # RAWIP -> RAW
    65534: 101,  # NONE (tun) -> RAW
    801: 105,  # IEEE80211
    802: 119,  # IEEE80211_PRISM -> PRISM_HEADER
    803: 127,  # IEEE80211_RADIOTAP
    280: 227,  # CAN -> CAN_SOCKETCAN
}

DEFAULT_BLOCK_SIZE = 1 << 20
DEFAULT_BLOCK_COUNT = 32
DEFAULT_RETIRE_MS = 10


def interface_linktype(name: str, where: str) -> int:
    """The link type of interface ``name``, after checking it exists and is up."""
    sys_dir = f"/sys/class/net/{name}"
    if not name or "/" in name or not os.path.isdir(sys_dir):
        raise EngineError(f"{where}: no such interface {name!r} (`ip link` lists them)")
    with open(f"{sys_dir}/type") as f:
        arphrd = int(f.read())
    with open(f"{sys_dir}/flags") as f:
        flags = int(f.read(), 16)
    if not flags & IFF_UP:
        raise EngineError(f"{where}: interface {name} is down (`ip link set {name} up`)")
    if arphrd not in ARPHRD_LINKTYPES:
        known = ", ".join(str(k) for k in sorted(ARPHRD_LINKTYPES))
        raise EngineError(
            f"{where}: interface {name} has hardware type ARPHRD {arphrd}, "
            f"which this capture does not map to a link type (it knows {known})"
        )
    return ARPHRD_LINKTYPES[arphrd]


def _warm_up() -> None:
    """Compile (or load from numba's cache) the block kernel now: done at the first block, it
    stalls the reader long enough (close to a second on a busy host) for the ring to fill."""
    block = np.zeros(mmap.PAGESIZE, np.uint8)
    z = np.zeros(0, np.int64)
    _walk_block(
        block,
        block.view(np.uint32),
        0,
        0,
        DEFAULT_SNAPLEN,
        block,
        z,
        z.astype(np.uint32),
        z.astype(np.uint32),
        z,
    )


class PacketRing:
    """A TPACKET_V3 receive ring bound to interface ``name`` (all protocols).

    ``snaplen`` cuts each frame in the kernel (a one-instruction BPF filter, as libpcap does),
    ``block_size`` (a multiple of the page size) times ``block_count`` is the ring's memory,
    ``retire_ms`` how long the kernel fills a block before handing it over anyway, ``promisc``
    puts the interface in promiscuous mode for as long as the ring is open.
    """

    def __init__(
        self,
        name: str,
        *,
        snaplen: int = DEFAULT_SNAPLEN,
        block_size: int = DEFAULT_BLOCK_SIZE,
        block_count: int = DEFAULT_BLOCK_COUNT,
        retire_ms: int = DEFAULT_RETIRE_MS,
        promisc: bool = True,
        where: str | None = None,
    ) -> None:
        where = where or f"iface:{name}"
        self.name = name
        self.where = where
        page = mmap.PAGESIZE
        if snaplen < 1 or snaplen > DEFAULT_SNAPLEN:
            raise EngineError(f"{where}: snaplen {snaplen} is not in 1..{DEFAULT_SNAPLEN}")
        if block_size < page or block_size % page:
            raise EngineError(
                f"{where}: ring block size {block_size} is not a multiple of the page size {page}"
            )
        if block_count < 2:
            raise EngineError(f"{where}: a ring needs at least 2 blocks, not {block_count}")
        if retire_ms < 1:
            raise EngineError(f"{where}: block retire timeout must be at least 1 ms")
        linktype = interface_linktype(name, where)
        self.snaplen = snaplen
        self.block_size = block_size
        self.block_count = block_count
        self.interface = Interface(linktype, snaplen, name, tsresol=9)
        self.received = 0  # packets handed to us
        self.kernel_packets = 0
        self.kernel_drops = 0
        self.kernel_freezes = 0
        self._next = 0
        self._stats_lock = threading.Lock()
        self.sock = self.map = None
        try:
            # Protocol 0 receives nothing until bind: no frame of another interface gets in.
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise EngineError(f"{where}: capturing on {name} needs root or CAP_NET_RAW") from None
        except OSError as exc:
            raise EngineError(f"{where}: cannot open a packet socket: {exc.strerror}") from None
        step = "set up the ring"
        try:
            step = "select TPACKET_V3"
            self.sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
            if snaplen < DEFAULT_SNAPLEN:
                step = f"set snaplen {snaplen}"
                self._attach_snaplen_filter(snaplen)
            step = f"allocate a {block_size * block_count >> 10} KiB ring"
            self.sock.setsockopt(
                SOL_PACKET,
                PACKET_RX_RING,
                TPACKET_REQ3.pack(
                    block_size,
                    block_count,
                    FRAME_SIZE,
                    block_size // FRAME_SIZE * block_count,
                    retire_ms,
                    0,
                    0,
                ),
            )
            step = "map the ring"
            self.map = mmap.mmap(
                self.sock.fileno(),
                block_size * block_count,
                mmap.MAP_SHARED,
                mmap.PROT_READ | mmap.PROT_WRITE,
            )
            step = f"bind to {name}"
            self.sock.bind((name, ETH_P_ALL))
            if promisc:
                step = "enter promiscuous mode"
                self.sock.setsockopt(
                    SOL_PACKET,
                    PACKET_ADD_MEMBERSHIP,
                    PACKET_MREQ.pack(socket.if_nametoindex(name), PACKET_MR_PROMISC, 0, b""),
                )
        except OSError as exc:
            self.close()
            raise EngineError(f"{where}: cannot {step}: {exc.strerror or exc}") from None
        self._bytes: np.ndarray | None = np.frombuffer(self.map, np.uint8)
        self._words: np.ndarray | None = self._bytes.view(np.uint32)
        self._poll = select.poll()
        self._poll.register(self.sock.fileno(), select.POLLIN | select.POLLERR)
        # Compiled after the bind, not before: what arrives meanwhile (a first compile takes
        # seconds) waits in the ring instead of being missed.
        try:
            _warm_up()
        except BaseException:
            self.close()
            raise

    def _attach_snaplen_filter(self, snaplen: int) -> None:
        insn = ctypes.create_string_buffer(SOCK_FILTER.pack(BPF_RET_K, 0, 0, snaplen))
        prog = SOCK_FPROG.pack(1, ctypes.addressof(insn))
        assert self.sock is not None  # called from __init__, once the socket is open
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, prog)

    def fileno(self) -> int:
        assert self.sock is not None  # opened in __init__ (which raises if it cannot)
        return self.sock.fileno()

    def _status_word(self, block: int) -> int:
        return block * self.block_size // 4 + _BLOCK_STATUS

    def ready(self) -> bool:
        """Whether the next block is retired and ours to read."""
        assert self._words is not None, "the ring is closed"
        return bool(self._words[self._status_word(self._next)] & TP_STATUS_USER)

    def wait(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` for the next block to be handed over."""
        if self.ready():
            return True
        self._poll.poll(timeout_ms)
        return self.ready()

    def read_block(self) -> PacketBatch | None:
        """The next retired block's packets as one batch (its own buffer), the block given
        back to the kernel; None if the kernel still holds it."""
        if not self.ready():
            return None
        assert self._bytes is not None and self._words is not None  # ready() says open
        w0 = self._next * self.block_size // 4
        count = int(self._words[w0 + _NUM_PKTS])
        first = int(self._words[w0 + _FIRST_PKT])
        blk_len = int(self._words[w0 + _BLK_LEN])
        lo = self._next * self.block_size
        block = self._bytes[lo : lo + self.block_size]
        words = self._words[w0 : w0 + self.block_size // 4]
        data = np.empty(min(blk_len, self.block_size), np.uint8)
        offsets = np.empty(count, np.int64)
        caplen = np.empty(count, np.uint32)
        origlen = np.empty(count, np.uint32)
        ts_ns = np.empty(count, np.int64)
        used = _walk_block(
            block, words, first, count, self.snaplen, data, offsets, caplen, origlen, ts_ns
        )
        # Given back only once copied: the kernel writes into it again at once.
        self._words[w0 + _BLOCK_STATUS] = TP_STATUS_KERNEL
        index = self._next
        self._next = (index + 1) % self.block_count
        if used < 0:
            raise EngineError(
                f"{self.where}: ring block {index} is malformed at frame {-1 - used} of {count}"
            )
        self.received += count
        return PacketBatch(
            data[:used], offsets, caplen, origlen, ts_ns, interfaces=(self.interface,)
        )

    def stats(self) -> dict[str, int]:
        """The kernel's counts so far (each read resets the kernel's own, so they add up
        here): ``kernel_packets`` it received for us (dropped ones included),
        ``kernel_drops`` it dropped for want of room in the ring, ``kernel_freezes`` times
        it froze the queue; and ``captured``, the packets handed to us."""
        with self._stats_lock:  # another thread may ask while the reader closes the ring
            if self.sock is not None and self.sock.fileno() >= 0:
                with contextlib.suppress(OSError):
                    raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS_V3.size)
                    packets, drops, freezes = TPACKET_STATS_V3.unpack(raw)
                    self.kernel_packets += packets
                    self.kernel_drops += drops
                    self.kernel_freezes += freezes
            return {
                "captured": self.received,
                "kernel_packets": self.kernel_packets,
                "kernel_drops": self.kernel_drops,
                "kernel_freezes": self.kernel_freezes,
            }

    def close(self) -> None:
        """Unmap the ring and close the socket (the counts stay readable)."""
        self.stats()
        self._bytes = self._words = None
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:
                # A view of the map held in a reference cycle (numba's first compile leaves
                # one): collected, the map closes; otherwise it goes with the last view.
                gc.collect()
                with contextlib.suppress(BufferError):
                    self.map.close()
            self.map = None
        if self.sock is not None:
            with self._stats_lock:
                self.sock.close()

    def __enter__(self) -> PacketRing:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PacketRing({self.name}, {linktype_name(self.interface.linktype)}, "
            f"{self.block_count} x {self.block_size >> 10} KiB)"
        )
