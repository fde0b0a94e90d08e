"""The container image (deploy/Containerfile, issue 12): it builds, `pktx --version` runs in it
with the compiled extensions, and a real delivery runs in it: a dispatcher in one container and
two workers in two others, over the dispatcher's loopback, through the compiled cipher
(encrypt, decrypt), anonymize and checksum, on a capture in a folder mounted from the host, with
the result read back here by dpkt and compared with the same delivery run here without a
container.

The image is $PKTX_TEST_IMAGE when set (.ci/run builds it with deploy/build-image and sets it);
otherwise, where podman is installed, this module builds localhost/pktx:test itself (some
minutes). Without podman it skips, saying so."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from locations import ROOT

pytestmark = pytest.mark.slow

BUILD = ROOT / "deploy" / "build-image"
CHAIN = "encrypt,decrypt,anonymize,checksum"
PARAMS = [
    "encrypt.key_file=/data/aes.key",
    "decrypt.key_file=/data/aes.key",
    "anonymize.key_file=/data/anon.key",
]


def _podman(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"podman {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def _remove(*names: str) -> None:
    """Remove containers, one at a time in this order: one that shares another's network must
    go first (podman refuses to remove a container that another depends on)."""
    for name in names:
        _podman("rm", "--force", "--ignore", "--time", "2", name, check=False)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (.ci/run installs it from Debian's packages)")
    name = os.environ.get("PKTX_TEST_IMAGE")
    if name:
        if _podman("image", "exists", name, check=False).returncode != 0:
            pytest.fail(f"$PKTX_TEST_IMAGE names {name}, which podman does not have")
        return name
    base = "localhost/pktx-base:bookworm"
    if (
        shutil.which("mmdebstrap") is None
        and _podman("image", "exists", base, check=False).returncode
    ):
        pytest.skip(f"no mmdebstrap to make the image's base, and no {base} (.ci/run installs it)")
    name = "localhost/pktx:test"
    done = subprocess.run(
        [str(BUILD), "--tag", name], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"deploy/build-image failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return name


@pytest.fixture(scope="module")
def run_options() -> list[str]:
    """The `podman run` options this machine needs (limits, runtime), from deploy/build-image."""
    out = subprocess.run(
        [str(BUILD), "--run-options"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return out.split()


def test_pktx_version_runs_with_the_compiled_extensions(image, run_options):
    done = _podman("run", "--rm", *run_options, image, "--version")
    assert done.stdout.startswith("pktx 0.1.0 (compiled extensions (Cython)"), done.stdout
    # Not root inside, and the segment cipher against libcrypto was built.
    done = _podman(
        "run",
        "--rm",
        *run_options,
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import os, ext._aesgcm, ext._capture; print(os.getuid())",
    )
    assert done.stdout.strip() == "10001"  # the image's own user, pktx


def _host_pktx(*args: str) -> subprocess.CompletedProcess:
    pktx = Path(sys.executable).parent / "pktx"
    return subprocess.run(
        [str(pktx), *args], capture_output=True, text=True, timeout=300, check=True
    )


def test_a_delivery_through_two_worker_containers(image, run_options, tmp_path):
    import dpkt

    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image runs as its own user, not root
    (data / "aes.key").write_text(secrets.token_hex(32))
    (data / "anon.key").write_text(secrets.token_hex(32))
    for key in ("aes.key", "anon.key"):
        if os.geteuid() == 0:  # the image's user owns them, as it would its own keys
            os.chown(data / key, 10001, 10001)
        (data / key).chmod(0o600)
    mount = f"{data}:/data"
    tag = uuid.uuid4().hex[:8]
    dispatcher, workers = (
        f"pktx-test-dispatcher-{tag}",
        [f"pktx-test-worker{i}-{tag}" for i in (1, 2)],
    )

    # pktx generate in the image, into the mounted folder.
    _podman("run", "--rm", *run_options, "-v", mount, image, "generate", "-q",
            "--packets", "3000", "--flows", "40", "--seed", "7", "/data/in.pcap")  # fmt: skip
    assert (data / "in.pcap").stat().st_size > 0

    try:
        # The dispatcher: no network but its own loopback, which the workers join.
        _podman("run", "-d", "--name", dispatcher, *run_options, "--network", "none",
                "-v", mount, image, "deliver", "/data/in.pcap", "-o", "/data/out.pcap",
                "--service", CHAIN, *[a for p in PARAMS for a in ("--param", p)],
                "--workers", "0", "--min-workers", "2", "--wait-workers", "120",
                "--bind", "tcp://127.0.0.1:5555", "--segment-packets", "256",
                "--usage-json", "/data/usage.json", "--json", "--log-format", "json")  # fmt: skip
        for name in workers:
            _podman("run", "-d", "--name", name, *run_options,
                    "--network", f"container:{dispatcher}", image, "worker",
                    "--connect", "tcp://127.0.0.1:5555", "--name", name,
                    "--exit-on-disconnect", "--max-idle", "120", "--json")  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = _podman("inspect", "--format", "{{.State.Status}}", dispatcher).stdout.strip()
            if state in ("exited", "stopped"):
                break
            time.sleep(1)
        code = _podman("inspect", "--format", "{{.State.ExitCode}}", dispatcher).stdout.strip()
        logs = _podman("logs", dispatcher)
        assert code == "0", f"the dispatcher exited {code}:\n{logs.stdout}\n{logs.stderr[-4000:]}"
        usage = json.loads((data / "usage.json").read_text())
        worker_logs = [_podman("logs", name).stdout for name in workers]
    finally:
        _remove(*workers, dispatcher)

    # Every packet went through, and both workers took part.
    assert usage["packets_in"] == usage["packets_out"] == 3000, usage
    assert sorted(usage["workers"]) == sorted(workers), (usage["workers"], worker_logs)
    assert all(w["packets"] > 0 for w in usage["workers"].values()), usage["workers"]

    # dpkt on the host: every packet, in order, addresses anonymized, payloads as they were
    # (encrypt then decrypt), and the same bytes as the same chain run here without a container.
    def packets(path: Path) -> list[bytes]:
        with path.open("rb") as f:
            return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]

    here = tmp_path / "here.pcap"
    keys = [p.replace("/data", str(data)) for p in PARAMS]
    _host_pktx("deliver", str(data / "in.pcap"), "-o", str(here), "--service", CHAIN, "-q",
               *[a for p in keys for a in ("--param", p)], "--workers", "1")  # fmt: skip
    sent, got = packets(data / "in.pcap"), packets(data / "out.pcap")
    assert len(got) == len(sent) == 3000
    assert got == packets(here)
    changed = 0
    for a, b in zip(sent, got, strict=True):
        ia, ib = dpkt.ethernet.Ethernet(a).data, dpkt.ethernet.Ethernet(b).data
        assert bytes(ia.data.data) == bytes(ib.data.data)  # the payload
        changed += ia.src != ib.src
    assert changed == len(sent)


def _get_inside(container: str, url: str) -> int:
    """The HTTP status of GET url from inside the container (its loopback), 0 if none."""
    done = _podman(
        "exec",
        container,
        "python3",
        "-c",
        "import sys, urllib.request as u, urllib.error as e\n"
        "try: print(u.urlopen(sys.argv[1], timeout=5).status)\n"
        "except e.HTTPError as x: print(x.code)\n"
        "except OSError: print(0)",
        url,
        check=False,
    )
    return int(done.stdout.strip() or 0)


def _wait_ready(container: str, url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _get_inside(container, url) == 200:
            return
        time.sleep(1)
    logs = _podman("logs", container, check=False)
    pytest.fail(f"{url} in {container} not ready in {seconds} s:\n{logs.stdout}\n{logs.stderr}")


def test_the_broker_and_a_daemon_serve_and_stop_on_sigterm(image, run_options):
    tag = uuid.uuid4().hex[:8]
    broker, daemon = f"pktx-test-broker-{tag}", f"pktx-test-daemon-{tag}"
    try:
        # The broker on its SQLite file in the image user's home, on its own loopback.
        _podman("run", "-d", "--name", broker, *run_options, "--network", "none", image,
                "broker", "serve", "--log-format", "json")  # fmt: skip
        _wait_ready(broker, "http://127.0.0.1:8040/readyz")

        def admin(*args: str) -> dict:
            return json.loads(_podman("exec", broker, "pktx", "broker", "admin", *args).stdout)

        admin("init")
        network = admin("network", "container-test")["id"]
        provider = admin("provider", "--network", str(network), "--name", "node",
                         "--service", "identity,checksum", "--capacity-bps", "1000000000",
                         "--per-gb", "10", "--per-mbps-hour", "1")["id"]  # fmt: skip
        token = admin("key", "provider", str(provider))["token"]

        # A daemon beside it, its key from the environment, its /readyz on its metrics port:
        # ready once the broker answered and its claim loop runs.
        _podman("run", "-d", "--name", daemon, *run_options, "--network", f"container:{broker}",
                "-e", f"PKTX_BROKER_KEY={token}", image, "daemon",
                "--broker", "http://127.0.0.1:8040", "--metrics", "127.0.0.1:9400",
                "--json", "--log-format", "json")  # fmt: skip
        _wait_ready(broker, "http://127.0.0.1:9400/readyz")
        assert _get_inside(broker, "http://127.0.0.1:8040/metrics") == 200

        # SIGTERM (podman stop) reaches pktx through tini: both drain and exit by themselves.
        for name in (daemon, broker):
            started = time.monotonic()
            _podman("stop", "-t", "60", name)
            assert time.monotonic() - started < 30
            code = _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            assert code in ("0", "143"), (name, code, _podman("logs", name).stderr[-2000:])
        report = json.loads(_podman("logs", daemon).stdout)
        assert report["provider_id"] == provider and report["jobs_finished"] == 0, report
    finally:
        _remove(daemon, broker)
