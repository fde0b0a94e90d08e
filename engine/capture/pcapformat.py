"""Constants of the pcap and pcapng file formats, and the record walkers' status codes."""

from typing import overload

# pcap file header magic numbers, as read little-endian.
PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAP_HEADER_LEN = 24
PCAP_RECORD_HEADER_LEN = 16
# libpcap reads versions 2.0-2.4 (2.4 is current; earlier ones differ only in old quirks).
PCAP_VERSION_MAJOR = 2
PCAP_VERSION_MINOR_MAX = 4
# libpcap refuses records larger than this unless the link type needs more (D-Bus, USB).
MAX_SNAPLEN = 262144
MAX_SNAPLEN_LARGE = 128 * 1024 * 1024
LARGE_SNAPLEN_LINKTYPES = frozenset({231, 189, 220, 249})  # DBUS, USB_LINUX(_MMAPPED), NETLINK

# pcapng block types.
BT_SHB = 0x0A0D0D0A
BT_IDB = 0x00000001
BT_PB = 0x00000002  # obsolete Packet Block
BT_SPB = 0x00000003
BT_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
PCAPNG_MIN_BLOCK = 12
# libpcap accepts 1.0, and 1.2 which some old writers put in files.
PCAPNG_VERSIONS = frozenset({(1, 0), (1, 2)})

# pcapng options we read or write.
OPT_ENDOFOPT = 0
OPT_COMMENT = 1
IF_NAME = 2
IF_DESCRIPTION = 3
IF_TSRESOL = 9
IF_FCSLEN = 13
IF_TSOFFSET = 14
SHB_USERAPPL = 4

# Status codes the walkers return (the compiled twin mirrors these numbers; a test checks).
OK = 0  # stopped at the end of the buffer or at the record limit
BLOCK = 1  # pcapng: a block the caller must read itself (SHB, IDB) starts at pos
TRUNC_HEADER = 2  # a record/block header runs past the end of the data
TRUNC_DATA = 3  # a record/block body runs past the end of the data
BAD_CAPLEN = 4  # pcap: captured length beyond the maximum; pcapng: beyond the block
BAD_BLOCK_LEN = 5  # pcapng: total length below 12 or not a multiple of 4
BAD_TRAILER = 6  # pcapng: trailing total length differs from the leading one
BAD_IFACE = 7  # pcapng: packet refers to an interface not described in its section


# File extensions that name a format, for writers asked to pick one from an output path.
EXTENSIONS = {".pcapng": "pcapng", ".ntar": "pcapng", ".pcap": "pcap", ".cap": "pcap"}


@overload
def format_for_path(path: str, default: str) -> str: ...
@overload
def format_for_path(path: str, default: None = None) -> str | None: ...
def format_for_path(path: str, default: str | None = None) -> str | None:
    """``"pcapng"`` or ``"pcap"`` by ``path``'s extension (case-insensitive), else ``default``."""
    lowered = str(path).lower()
    for ext, fmt in EXTENSIONS.items():
        if lowered.endswith(ext):
            return fmt
    return default
