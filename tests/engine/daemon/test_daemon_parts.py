"""The daemon's parts without a broker: its state across a reopen (reports kept before they
are sent, never below the last), the job spec turned into a ``pktx deliver`` command (file
names confined to the files folder), a real delivery run read back with dpkt, and the broker
URL and key rules."""

from __future__ import annotations

import os
import shutil
import time

import dpkt
import pytest
from locations import need_corpus

from engine.daemon.broker_client import Backoff, check_url, read_key
from engine.daemon.runs import (
    BadSpec,
    NodeOptions,
    Run,
    command,
    counters_of,
    resume_options,
)
from engine.daemon.standby import Standby
from engine.daemon.state import COUNTERS, State
from engine.errors import EngineError


def packets(path) -> list[bytes]:
    with open(path, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


def test_reports_are_kept_before_they_are_sent_and_never_go_down(tmp_path):
    state = State(str(tmp_path / "st"))
    state.take(7, 3, {"services": ["identity"]}, {"bytes_out": 100, "sequence": 4})
    job = state.job(7)
    assert (job.token, job.phase, job.next_sequence, job.reported["bytes_out"]) == (
        3,
        "claimed",
        5,
        100,
    )
    seq, body = state.next_report(7, {"bytes_out": 250, "packets_out": 3})
    assert (seq, body["bytes_out"], body["packets_out"]) == (5, 250, 3)
    # A run that started again from the beginning reads less: the report holds the larger.
    seq2, body2 = state.next_report(7, {"bytes_out": 120, "packets_out": 9})
    assert (seq2, body2["bytes_out"], body2["packets_out"]) == (6, 250, 9)
    assert state.next_report(7, {"bytes_out": 200}) is None  # nothing grew
    state.close()
    again = State(str(tmp_path / "st"))  # as after a SIGKILL
    assert [(j, s) for j, s, _ in again.unsent()] == [(7, 5), (7, 6)]
    again.acknowledged(7, 5)
    assert [(j, s, b["bytes_out"]) for j, s, b in again.unsent()] == [(7, 6, 250)]
    assert set(again.job(7).reported) == set(COUNTERS)
    # Claimed again (by this daemon, after the broker offered it anew): the broker's count wins.
    again.take(7, 4, {}, {"bytes_out": 250, "sequence": 6})
    assert again.unsent() == [] and again.job(7).next_sequence == 7
    assert oct(os.stat(tmp_path / "st").st_mode & 0o777) == "0o700"


def test_a_report_is_made_in_one_transaction_or_not_at_all(tmp_path):
    """The outbox row and the job's next sequence commit together: a failure between the two
    statements (as a kill would be) leaves neither; the state is WAL with synchronous=NORMAL
    (safe against a killed process, see `State`)."""
    import sqlite3

    state = State(str(tmp_path / "st"))
    state.take(7, 3, {}, {"sequence": 4})
    assert state.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert state.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    state.db.execute(
        "CREATE TRIGGER stop BEFORE UPDATE ON jobs BEGIN "
        "SELECT RAISE(ABORT, 'killed between the two'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="killed between"):
        state.next_report(7, {"bytes_out": 100})
    state.db.execute("DROP TRIGGER stop")
    state.close()
    again = State(str(tmp_path / "st"))
    assert again.unsent() == [] and again.job(7).next_sequence == 5
    assert again.next_report(7, {"bytes_out": 100}) == (
        5,
        {**dict.fromkeys(COUNTERS, 0), "bytes_out": 100},
    )


def test_a_spec_becomes_a_deliver_command_with_files_confined(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "in.pcap").write_bytes(b"")
    node = NodeOptions(workers=2, files=str(files))
    argv = command(
        {
            "source": "in.pcap",
            "sink": "out/x.pcap",
            "services": ["checksum", "encrypt"],
            "params": ["encrypt.key_env=K"],
            "share": {"index": 1, "of": 3},
            "max_rate_bps": 8_000_000,
            "min_rate_bps": 1000,
        },
        node,
        "/u.json",
    )
    assert argv[3:7] == ["deliver", str(files / "in.pcap"), "-o", str(files / "out/x.pcap")]
    joined = " ".join(argv)
    for part in (
        "--service checksum,encrypt",
        "--param encrypt.key_env=K",
        "--share 1/3",
        "--max-rate 8000000",
        "--min-rate 1000",
        "--workers 2",
        "--usage-json /u.json",
    ):
        assert part in joined
    live = command(
        {"source": "udp://127.0.0.1:9000", "sink": "zmq://10.0.0.2:7000"}, node, "/u.json"
    )
    assert live[4:7] == ["udp://127.0.0.1:9000", "-o", "zmq://10.0.0.2:7000"]
    for bad, says in (
        ({"source": "../../etc/passwd", "sink": "o.pcap"}, "outside"),
        ({"source": "in.pcap", "sink": "/etc/cron.d/x"}, "outside"),
        ({"source": "in.pcap", "sink": "http://x/y"}, "a capture file"),
        ({"source": "missing.pcap", "sink": "o.pcap"}, "not in the files"),
        ({"sink": "o.pcap"}, "no usable source"),
        ({"source": "in.pcap", "sink": "o.pcap", "params": ["nokey"]}, "KEY=VALUE"),
        ({"source": "in.pcap", "sink": "o.pcap", "services": "identity"}, "list"),
    ):
        with pytest.raises(BadSpec) as caught:
            command(bad, node, "/u.json")
        assert says in str(caught.value)
    os.symlink("/etc", files / "escape")
    with pytest.raises(BadSpec):
        command({"source": "in.pcap", "sink": "escape/x.pcap"}, node, "/u.json")
    with pytest.raises(BadSpec) as caught:
        command({"source": "in.pcap", "sink": "o.pcap"}, NodeOptions(), "/u.json")
    assert "--files" in str(caught.value)


def test_the_nodes_own_service_parameters_go_only_to_jobs_with_the_service(tmp_path):
    (tmp_path / "in.pcap").write_bytes(b"")
    node = NodeOptions(files=str(tmp_path), params=("encrypt.key_env=SEAL", "anonymize.key_file=k"))
    sealed = command(
        {"source": "in.pcap", "sink": "o.pcap", "services": ["encrypt"]}, node, "/u.json"
    )
    assert " ".join(sealed).count("--param") == 1 and "encrypt.key_env=SEAL" in sealed
    plain = command(
        {"source": "in.pcap", "sink": "o.pcap", "services": ["identity"]}, node, "/u.json"
    )
    assert "--param" not in plain


def test_a_run_delivers_the_file_and_its_counters_match_the_output(tmp_path):
    corpus = need_corpus()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(corpus / "dpkt" / "http.pcap", files / "in.pcap")
    run = Run(
        1,
        {"source": "in.pcap", "sink": "out.pcap", "services": ["identity"]},
        NodeOptions(workers=1, files=str(files)),
        str(tmp_path / "job1"),
        base={},
    )
    assert not run.live and not run.streams
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run.poll() == 0, run.error()
    sent = packets(files / "in.pcap")
    assert packets(files / "out.pcap") == sent
    c = run.counters()
    assert (c["packets_out"], c["bytes_out"]) == (len(sent), sum(map(len, sent)))
    m = run.measured()
    assert (m["packets"], m["bytes"], m["errors"]) == (len(sent), c["bytes_out"], 0)


def _spare(tmp_path, ready: bool = True) -> Standby:
    """A spare delivery process, its imports done when ``ready`` (its CPU would otherwise
    compete with the delivery under test, which it does not in the daemon either)."""
    spare = Standby(dict(os.environ), str(tmp_path / "standby.log"))
    if ready:
        deadline = time.monotonic() + 60
        while not spare.ready():
            assert spare.proc.poll() is None, (tmp_path / "standby.log").read_text()
            assert time.monotonic() < deadline, "the spare never got ready"
            time.sleep(0.05)
    return spare


def test_a_spare_takes_the_job_and_delivers_it_as_a_started_delivery_would(tmp_path):
    """The daemon's spare (standby.py): the run's delivery is the process started before the
    job, its output and counters the same as a started one's, its errors in the job's
    stderr.log, the job's environment (its log context here; sealed parameters too) not in
    the environment it started with."""
    corpus = need_corpus()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(corpus / "dpkt" / "http.pcap", files / "in.pcap")
    spare = _spare(tmp_path)
    run = Run(
        4,
        {"source": "in.pcap", "sink": "out.pcap", "services": ["identity"], "award_id": 9},
        NodeOptions(workers=1, files=str(files)),
        str(tmp_path / "job4"),
        base={},
        standby=spare,
    )
    assert run.warm and run.proc is spare.proc
    with open(f"/proc/{run.proc.pid}/environ", "rb") as f:
        assert b"PKTX_LOG_JOB_ID" not in f.read()  # the job's context came down the pipe
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() == 0, run.error()
    sent = packets(files / "in.pcap")
    assert packets(files / "out.pcap") == sent
    c = run.counters()
    assert (c["packets_out"], c["bytes_out"]) == (len(sent), sum(map(len, sent)))

    # Its errors land in the job's stderr.log, where the daemon reads a failure's reason.
    (files / "bad.pcap").write_bytes(b"this is no capture file" * 10)
    bad = Run(
        6,
        {"source": "bad.pcap", "sink": "out2.pcap"},
        NodeOptions(workers=1, files=str(files)),
        str(tmp_path / "job6"),
        base={},
        standby=_spare(tmp_path),
    )
    assert bad.warm
    assert bad.proc.wait(120) == 1
    assert "bad.pcap" in bad.error() and "Traceback" not in bad.error()
    assert not (files / "out2.pcap").exists()


def test_a_spare_that_ended_is_replaced_by_an_ordinary_start(tmp_path, caplog):
    corpus = need_corpus()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(corpus / "dpkt" / "http.pcap", files / "in.pcap")
    spare = _spare(tmp_path)
    spare.proc.kill()
    spare.proc.wait()
    run = Run(
        5,
        {"source": "in.pcap", "sink": "out.pcap"},
        NodeOptions(workers=1, files=str(files)),
        str(tmp_path / "job5"),
        base={},
        standby=spare,
    )
    assert not run.warm and run.proc is not spare.proc
    assert "the spare delivery process ended before its job" in caplog.text
    deadline = time.monotonic() + 120
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert run.poll() == 0, run.error()
    assert packets(files / "out.pcap") == packets(files / "in.pcap")


def test_an_unused_spare_ends_when_closed_and_with_its_daemon(tmp_path):
    import signal
    import subprocess
    import sys

    from locations import ROOT

    spare = _spare(tmp_path)
    spare.close()
    assert spare.proc.returncode == 0  # end of file on its pipe: no job, no error

    # A daemon SIGKILLed with a spare waiting: the spare goes with it (parent-death signal).
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; from engine.daemon.standby import Standby; "
            "s = Standby(dict(os.environ), sys.argv[1]); print(s.proc.pid, flush=True); "
            "time.sleep(600)",
            str(tmp_path / "standby2.log"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    deadline = time.monotonic() + 60
    while "ready for a job" not in (tmp_path / "standby2.log").read_text():
        assert time.monotonic() < deadline, "the spare never got ready"
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, "the spare outlived its daemon"
        time.sleep(0.1)


@pytest.mark.parametrize("warm", [False, True], ids=["started", "spare"])
def test_a_stopped_run_leaves_no_output_and_no_process(tmp_path, warm):
    corpus = need_corpus()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(corpus / "dpkt" / "http.pcap", files / "in.pcap")
    # A rate so low the delivery cannot end before it is stopped.
    run = Run(
        2,
        {"source": "in.pcap", "sink": "out.pcap", "max_rate_bps": 8000},
        NodeOptions(workers=1, files=str(files)),
        str(tmp_path / "job2"),
        base={},
        standby=_spare(tmp_path) if warm else None,
    )
    assert run.warm == warm
    time.sleep(1.5)
    assert run.poll() is None
    run.stop(grace_s=20)
    assert run.poll() is not None and run.stopping
    assert not (files / "out.pcap").exists()
    assert [p for p in os.listdir(files) if p != "in.pcap"] == []  # no temporary left
    with pytest.raises(ProcessLookupError):
        os.killpg(run.proc.pid, 0)  # its workers are gone


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (gone, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_delivery_dies_with_its_parent_and_refuses_to_start_without_it(tmp_path):
    """``pktx deliver --die-with-parent PID`` (how `Run` starts it, with no ``preexec_fn``):
    the parent SIGKILLed mid-delivery takes the delivery with it, no output left; a PID that is
    not its parent (it ended before the child got going) is an error at once."""
    import signal
    import subprocess
    import sys

    from locations import ROOT

    corpus = need_corpus()
    deliver = [
        sys.executable,
        "-m",
        "engine.cli",
        "deliver",
        str(corpus / "dpkt" / "http.pcap"),
        "-o",
        str(tmp_path / "out.pcap"),
        "--workers",
        "1",
        "--max-rate",
        "8000",
        "-q",
    ]
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:] + "
            "['--die-with-parent', str(os.getpid())]); print(p.pid, flush=True); p.wait()",
            *deliver,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    time.sleep(2)  # past its start-up, delivering slowly
    assert not _gone(child)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline, "the delivery outlived its parent"
        time.sleep(0.1)
    assert not (tmp_path / "out.pcap").exists()

    done = subprocess.run(
        [*deliver, "--die-with-parent", str(parent.pid)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert f"--die-with-parent {parent.pid}: that process has ended" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "out.pcap").exists()


def test_a_live_runs_counters_add_to_what_runs_before_it_reported(tmp_path):
    run = Run.__new__(Run)
    run.live, run.base = True, {"bytes_out": 1000, "packets_out": 10}
    run.usage = lambda: {"bytes_out": 500, "packets_out": 5, "duration_ns": 3_000_000_000}
    c = run.counters()
    assert (c["bytes_out"], c["packets_out"], c["seconds"]) == (1500, 15, 3)
    assert counters_of({})["bytes_out"] == 0


def test_a_stream_resumes_and_its_packet_counters_are_its_own(tmp_path):
    """A zmq:// sink resumes as the stream job-ID; a file into udp:// from the last run's
    record; the packet and byte counters come from the record's stream_position (cumulative
    over the runs), the time counters add to the last report."""
    previous = tmp_path / "previous-usage.json"
    assert resume_options(7, {"source": "in.pcap", "sink": "zmq://h:1"}, str(previous)) == (
        "--stream-id",
        "job-7",
    )
    assert resume_options(7, {"source": "udp://h:2", "sink": "zmq://h:1"}, str(previous)) == (
        "--stream-id",
        "job-7",
    )
    udp = {"source": "in.pcap", "sink": "udp://h:1"}
    assert resume_options(7, udp, str(previous)) == ()  # no earlier run
    previous.write_text('{"stream_position": {"position": 5}}')
    assert resume_options(7, udp, str(previous)) == ("--resume-from", str(previous))
    assert resume_options(7, {**udp, "source": "iface:eth0"}, str(previous)) == ()
    assert resume_options(7, {**udp, "sink": "o.pcap"}, str(previous)) == ()
    run = Run.__new__(Run)
    run.live, run.positioned = False, True
    run.base = {"bytes_out": 1000, "packets_out": 10, "seconds": 4, "windows_met": 2}
    run.usage = lambda: None
    assert run.counters()["bytes_out"] == 1000  # nothing measured yet: the last report
    run.usage = lambda: {
        "bytes_out": 500,
        "packets_out": 5,
        "duration_ns": 3_000_000_000,
        "min_rate_windows_met": 3,
        "stream_position": {
            "position": 20,
            "packets_in": 19,
            "bytes_in": 1900,
            "packets_out": 18,
            "bytes_out": 1800,
        },
    }
    c = run.counters()
    assert (c["packets_in"], c["bytes_in"], c["packets_out"], c["bytes_out"]) == (
        19,
        1900,
        18,
        1800,
    )
    assert (c["seconds"], c["windows_met"]) == (7, 5)


def test_the_broker_url_and_the_key(tmp_path, monkeypatch):
    assert check_url("https://broker.example:8443/") == "https://broker.example:8443"
    assert check_url("http://127.0.0.1:8040") == "http://127.0.0.1:8040"
    assert check_url("http://[::1]:8040") == "http://[::1]:8040"
    for bad, says in (
        ("http://broker.example", "loopback"),
        ("ftp://x", "https://"),
        ("broker:8040", "https://"),
    ):
        with pytest.raises(EngineError) as caught:
            check_url(bad)
        assert says in str(caught.value)
    keyfile = tmp_path / "key"
    keyfile.write_text("pk_abc.def\n")
    assert read_key(str(keyfile), None) == "pk_abc.def"
    monkeypatch.setenv("MY_KEY", " tok ")
    assert read_key(None, "MY_KEY") == "tok"
    monkeypatch.delenv("PKTX_BROKER_KEY", raising=False)
    with pytest.raises(EngineError) as caught:
        read_key(None, None)
    assert "PKTX_BROKER_KEY" in str(caught.value)
    (tmp_path / "empty").write_text("")
    with pytest.raises(EngineError):
        read_key(str(tmp_path / "empty"), None)


def test_backoff_grows_with_jitter_to_its_cap():
    b = Backoff(first=0.5, cap=4.0)
    delays = [b.next_delay() for _ in range(12)]
    assert all(0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1
    assert max(delays[:1]) <= 0.5
    b.reset()
    assert b.failures == 0


def test_a_delivery_stops_itself_when_its_lease_file_goes_stale(tmp_path):
    """The data plane's fence: a daemon paused or cut off stops renewing the lease file, and
    its delivery stops (as on SIGTERM: no partial output) before a successor starts."""
    import subprocess
    import sys

    from locations import ROOT

    corpus = need_corpus()
    lease = tmp_path / "lease"
    lease.write_text("")
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "deliver",
            str(corpus / "dpkt" / "http.pcap"),
            "-o",
            str(tmp_path / "out.pcap"),
            "--workers",
            "1",
            "--max-rate",
            "8000",
            "-q",
            "--lease-file",
            str(lease),
            "--lease-timeout",
            "1.5",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 128 + 15, done.stderr
    assert "not renewed" in done.stderr and time.monotonic() - started < 60
    assert not (tmp_path / "out.pcap").exists()


def test_the_claim_loop_outlives_an_error_that_is_not_the_broker_away(tmp_path):
    """A claim failing with an `EngineError` other than `Refused` (the broker's certificate
    not accepted, after a rotation to one the daemon does not trust) is logged and tried again
    with back-off: it used to end the claim thread, and the daemon never claimed again."""
    from engine.daemon.node import Daemon, DaemonOptions

    daemon = Daemon(
        "http://127.0.0.1:9", "k", str(tmp_path / "st"), NodeOptions(), DaemonOptions(tick_s=0.01)
    )
    daemon.provider_id = 1
    calls = []

    class Claimer:
        def claim(self, *args, **kw):
            calls.append(time.monotonic())
            if len(calls) == 1:
                raise EngineError("the broker's certificate was not accepted")
            daemon.draining.set()
            return None

    daemon.claimer = Claimer()
    daemon._claim_loop()  # returns once draining; raised out of it before the fix
    assert len(calls) == 2
    daemon.client.close()
    daemon.state.close()


def test_a_job_leaving_the_node_lets_the_claim_thread_claim_at_once(tmp_path):
    """The claim thread of a full node waited out a whole tick after a job left before it
    claimed the next (0.2 s per job of a burst): now the job's leaving wakes it. A tick of
    5 s here shows which it does."""
    import threading

    from engine.daemon.node import Daemon, DaemonOptions

    daemon = Daemon(
        "http://127.0.0.1:9",
        "k",
        str(tmp_path / "st"),
        NodeOptions(),
        DaemonOptions(tick_s=5, max_jobs=1),
    )
    daemon.provider_id = 1
    daemon.state.take(1, 1, {}, {})

    class Running:
        def stop(self):
            pass

    daemon.runs[1] = Running()
    claimed = []

    class Claimer:
        def claim(self, *args, **kw):
            claimed.append(time.monotonic())
            daemon.draining.set()
            return None

    daemon.claimer = Claimer()
    thread = threading.Thread(target=daemon._claim_loop)
    thread.start()
    time.sleep(0.3)  # the thread is waiting for room
    assert claimed == []
    left = time.monotonic()
    daemon._drop(1)
    thread.join(10)
    assert claimed and claimed[0] - left < 1.0, claimed
    daemon.client.close()
    daemon.state.close()


@pytest.mark.parametrize("warm", [False, True], ids=["started", "spare"])
def test_a_killed_runs_ipc_folder_stays_in_its_job_folder_and_goes_with_its_next_run(
    tmp_path, monkeypatch, warm
):
    """A delivery SIGKILLed (with its daemon) cannot remove its local workers' ipc folder:
    it is in the job's folder, not the node's $TMPDIR, and the job's next run removes it."""
    import signal

    corpus = need_corpus()
    files = tmp_path / "files"
    files.mkdir()
    shutil.copy(corpus / "dpkt" / "http.pcap", files / "in.pcap")
    node_tmp = tmp_path / "node-tmp"
    node_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(node_tmp))
    folder = tmp_path / "job7"
    spec = {"source": "in.pcap", "sink": "out.pcap", "max_rate_bps": 8000}
    node = NodeOptions(workers=1, files=str(files))
    run = Run(7, spec, node, str(folder), base={}, standby=_spare(tmp_path) if warm else None)
    deadline = time.monotonic() + 60
    while not list((folder / "tmp").glob("pktx-*/dispatcher")):
        assert run.poll() is None, run.error()
        assert time.monotonic() < deadline, "no ipc socket in the job's folder"
        time.sleep(0.05)
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait()
    assert list((folder / "tmp").glob("pktx-*")), "the killed run's folder is where expected"
    assert list(node_tmp.iterdir()) == []

    again = Run(7, {**spec, "max_rate_bps": None}, node, str(folder), base={})
    assert again.proc.wait(120) == 0, again.error()
    assert packets(files / "out.pcap") == packets(files / "in.pcap")
    assert list((folder / "tmp").iterdir()) == [] and list(node_tmp.iterdir()) == []


def test_a_daemon_sigtermed_as_soon_as_it_catches_the_signal_drains_and_exits_0(tmp_path):
    """The first moment a starting ``pktx daemon`` catches SIGTERM is before its command
    line's modules load (engine.cli keeps the signal until the daemon's own handlers take
    it): a SIGTERM then drains as a later one does, exit 0, no traceback, whether or not a
    broker ever answered."""
    import signal
    import subprocess
    import sys

    from locations import ROOT, free_port

    from benchmarks.node_world import catching

    for attempt in range(3):
        log = tmp_path / f"daemon-{attempt}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "engine.cli",
                    "daemon",
                    "--broker",
                    f"http://127.0.0.1:{free_port()}",  # nothing listens
                    "--key-env",
                    "K",
                    "--state",
                    str(tmp_path / f"state-{attempt}"),
                ],
                cwd=ROOT,
                stdout=out,
                stderr=out,
                env={**os.environ, "K": "pktx_nobody"},
            )
        catching(proc, signal.SIGTERM, what=log.read_text)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
