"""The broker's HTTP API for daemons, as the daemon calls it.

HTTPS with the broker's certificate verified (the system's CAs, or a CA bundle for a private
CA); plain HTTP only to a loopback address. The provider's API key comes from a file or the
environment and is sent as a bearer token; it is never logged.

Every call that changes something carries an idempotency key made from the job, the fencing
token and what the call does, so a call retried after a lost answer is answered as the first.
`BrokerAway` is the broker not answering (connection refused, a time-out, a 5xx): the caller
waits it out with `Backoff` and keeps its deliveries running. `LeaseLost` is the broker saying
the job is no longer this daemon's.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import random
import ssl
import time
from urllib.parse import urlsplit

import httpx

from engine.errors import EngineError
from engine.logs import register_secret

log = logging.getLogger(__name__)
# httpx logs every request at INFO: the daemon's log is for what happens to jobs.
logging.getLogger("httpx").setLevel(logging.WARNING)


class BrokerAway(Exception):
    """The broker did not answer (or answered 5xx): try again later."""


class LeaseLost(Exception):
    """The broker gave the job to another daemon (or took it back): stop it here."""


class Refused(EngineError):
    """The broker refused a call (4xx other than a lost lease): what it said."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"the broker refused ({status} {code}): {message}")
        self.status, self.code = status, code


def read_key(key_file: str | None, key_env: str | None) -> str:
    """The provider's API key from a file (first line) or an environment variable. Taken from
    the environment, it is removed from it: the deliveries and workers this process starts
    inherit its environment and have no use for the key. Never shown in a log line."""
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as f:
                key = f.readline().strip()
        except OSError as exc:
            raise EngineError(f"--key-file {key_file}: {exc.strerror or exc}") from None
        if not key:
            raise EngineError(f"--key-file {key_file}: the file is empty")
    else:
        name = key_env or "PKTX_BROKER_KEY"
        key = os.environ.pop(name, "").strip()
        if not key:
            raise EngineError(f"no API key: give --key-file FILE or set {name}")
    register_secret(key)
    return key


def check_url(url: str) -> str:
    """The broker's base URL: https, or http to a loopback host only."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(f"--broker {url}: give https://HOST[:PORT]")
    if parts.scheme == "http" and not _loopback(parts.hostname):
        raise EngineError(
            f"--broker {url}: plain HTTP only to a loopback address (the API "
            "key would cross the network in clear); use https://"
        )
    return url.rstrip("/")


def trusting(ca_bundle: str) -> ssl.SSLContext:
    """A client TLS context that verifies against the CA certificates in ``ca_bundle``."""
    if not os.path.isfile(ca_bundle):
        raise EngineError(f"--ca-bundle {ca_bundle}: no such file")
    try:
        return ssl.create_default_context(cafile=ca_bundle)
    except ssl.SSLError as exc:
        raise EngineError(f"--ca-bundle {ca_bundle}: no PEM certificates in it ({exc})") from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Backoff:
    """Exponential back-off with full jitter: 0.5 s doubling up to ``cap`` seconds."""

    def __init__(self, first: float = 0.5, cap: float = 30.0) -> None:
        self.first, self.cap, self.failures = first, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.first * 2 ** (self.failures - 1)))

    def reset(self) -> None:
        self.failures = 0


class BrokerClient:
    """Calls for daemons of ``provider_id`` (learnt from the key: ``GET /v1/me``)."""

    def __init__(
        self, url: str, key: str, *, ca_bundle: str | None = None, timeout_s: float = 10.0
    ) -> None:
        self.url = check_url(url)
        verify: bool | ssl.SSLContext = True
        if ca_bundle:
            verify = trusting(ca_bundle)
        self.timeout_s = timeout_s
        self.http = httpx.Client(
            base_url=self.url,
            verify=verify,
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {key}", "User-Agent": "pktx-daemon"},
        )

    def close(self) -> None:
        self.http.close()

    # -- the calls ----------------------------------------------------------------------------
    def me(self) -> dict:
        return self._answered("GET", "/v1/me")

    def claim(
        self,
        provider_id: int,
        daemon: str,
        *,
        wait_s: float,
        lease_s: float,
        sealing_key: str | None = None,
    ) -> dict | None:
        """A job of the provider's with its lease, or None when none came within ``wait_s``
        (``sealing_key``: the public key this daemon opens sealed parameters with)."""
        body = {"daemon": daemon, "wait_s": int(wait_s), "lease_s": int(lease_s)}
        if sealing_key:
            body["sealing_key"] = sealing_key
        return self._call(
            "POST", f"/v1/providers/{provider_id}/jobs/claim", body, timeout=wait_s + self.timeout_s
        )

    def register_sealing_key(
        self, provider_id: int, public_key: str, *, replace: bool = False
    ) -> dict:
        return self._answered(
            "PUT",
            f"/v1/providers/{provider_id}/sealing-key",
            {"public_key": public_key, "replace": replace},
        )

    def heartbeat(self, job_id: int, token: int, lease_s: float) -> dict:
        return self._answered(
            "POST", f"/v1/jobs/{job_id}/heartbeat", {"token": token, "lease_s": int(lease_s)}
        )

    def start(self, job_id: int, token: int) -> dict:
        return self._answered(
            "POST",
            f"/v1/jobs/{job_id}/start",
            {"token": token},
            key=f"daemon-{job_id}-{token}-start",
        )

    def report(self, job_id: int, token: int, sequence: int, counters: dict) -> dict:
        return self._answered(
            "POST", f"/v1/jobs/{job_id}/usage", {"sequence": sequence, "token": token, **counters}
        )

    def finish(
        self, job_id: int, token: int, outcome: dict, report: tuple[int, dict] | None = None
    ) -> dict:
        """``outcome``: {"call": complete|fail|handback, "body": {...}}; ``report``: the job's
        last usage report (sequence, counters), taken in with a ``complete`` in one call."""
        call = outcome["call"]
        body = {"token": token, **outcome["body"]}
        if report is not None:
            body["report"] = {"sequence": report[0], **report[1]}
        return self._answered(
            "POST", f"/v1/jobs/{job_id}/{call}", body, key=f"daemon-{job_id}-{token}-{call}"
        )

    def _answered(self, method: str, path: str, body: dict | None = None, **kw) -> dict:
        """A call that the broker answers with a document (a 204 is not one it may give)."""
        answer = self._call(method, path, body, **kw)
        if answer is None:
            raise BrokerAway(f"{method} {path}: the broker answered with no content")
        return answer

    def _call(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        *,
        key: str | None = None,
        timeout: float | None = None,
    ) -> dict | None:
        headers = {"Idempotency-Key": key} if key else None
        try:
            r = self.http.request(
                method, path, json=body, headers=headers, timeout=timeout or self.timeout_s
            )
        except httpx.TransportError as exc:  # refused, reset, timed out, TLS failed
            if isinstance(exc, httpx.ConnectError) and "CERTIFICATE" in str(exc).upper():
                raise EngineError(
                    f"{self.url}: the broker's certificate was not accepted: "
                    f"{exc} (a private CA: --ca-bundle FILE)"
                ) from None
            if isinstance(exc, httpx.ConnectError) and "WRONG_VERSION_NUMBER" in str(exc):
                # Not a broker away but one that does not speak TLS there: waiting it out
                # would be retrying for ever.
                raise EngineError(
                    f"{self.url}: the server there does not speak TLS ({exc}); "
                    "a broker serving plain HTTP on loopback is "
                    "--broker http://..."
                ) from None
            raise BrokerAway(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 204:
            return None
        if r.status_code >= 500 or r.status_code == 429:
            raise BrokerAway(f"{method} {path}: {r.status_code}")
        try:
            answer = r.json()
        except ValueError:
            answer = {}
        if r.status_code < 400:
            return answer
        code = answer.get("error") or answer.get("code") or "error"
        message = answer.get("message") or r.text[:300]
        if r.status_code == 409 and code == "lease_lost":
            raise LeaseLost(message)
        raise Refused(r.status_code, code, message)


def wait_out(call, *, stop=None, what: str = "the broker", backoff: Backoff | None = None):
    """``call()`` until the broker answers (`BrokerAway` waited out with back-off and jitter);
    ``stop()`` true ends the wait with `BrokerAway`."""
    backoff = backoff or Backoff()
    while True:
        try:
            answer = call()
            backoff.reset()
            return answer
        except BrokerAway as exc:
            delay = backoff.next_delay()
            if backoff.failures in (1, 5) or backoff.failures % 20 == 0:
                log.warning(
                    "%s is away (%s); trying again (%d failures so far)",
                    what,
                    exc,
                    backoff.failures,
                )
            if stop is not None and stop():
                raise
            time.sleep(delay)
