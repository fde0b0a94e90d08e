"""The transport's limit for `pktx bench deliver`: raw pyzmq, dispatcher to worker and back.

A ROUTER sends the segments' frames against a credit window to a DEALER in another process,
which sends each message straight back; no processing, no reassembly, no file.
"""

from __future__ import annotations

import subprocess
import sys
import time

import zmq

_ECHO = r"""
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.connect(sys.argv[1])
s.send(b"ready")
while True:
    frames = s.recv_multipart(copy=False)
    if len(frames) == 1 and frames[0].bytes == b"end":
        break
    s.send_multipart(frames, copy=False)
"""


def run(segments: list[list], *, credit: int = 4) -> float:
    """Seconds to send every segment (a list of frames) to an echo process and get it back."""
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    child = subprocess.Popen([sys.executable, "-c", _ECHO, f"tcp://127.0.0.1:{port}"])
    try:
        ident, _ = router.recv_multipart()
        t0 = time.perf_counter()
        sent = received = 0
        while received < len(segments):
            while sent < len(segments) and sent - received < credit:
                router.send_multipart([ident, *segments[sent]], copy=False)
                sent += 1
            router.recv_multipart(copy=False)
            received += 1
        elapsed = time.perf_counter() - t0
        router.send_multipart([ident, b"end"])
        child.wait(10)
        return elapsed
    finally:
        if child.poll() is None:
            child.kill()
        router.close(0)
