"""The broker's HTTP API under test: a real uvicorn server on a random loopback port, clients
per participant, and every answer checked against the server's own OpenAPI document."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import httpx
import uvicorn
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from broker.actors import issue_key
from broker.api import create_app


class Served:
    """``create_app(store)`` served by uvicorn in a thread; ``url`` while it runs."""

    def __init__(self, store, **app_options) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(create_app(store, **app_options), log_level="warning")
        )
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        return self

    def __exit__(self, *_exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


class _OpenApiRequest:
    def __init__(self, request: httpx.Request) -> None:
        url = urlparse(str(request.url))
        self.host_url, self.path = f"{url.scheme}://{url.netloc}", url.path
        self.method = request.method.lower()
        self.body = request.content or None
        self.content_type = request.headers.get("content-type", "application/json")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )


class _OpenApiResponse:
    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))


class ContractCheck:
    """An httpx response hook: every answer must match the operation's declared response in
    ``/openapi.json`` (status, JSON types, required fields). A mismatch fails the test that
    made the call, whatever it asserts itself."""

    def __init__(self, base: str) -> None:
        self.spec = OpenAPI.from_dict(httpx.get(f"{base}/openapi.json").json())
        self.checked = 0

    def __call__(self, response: httpx.Response) -> None:
        response.read()
        if response.status_code == 404 and response.json().get("message") == "Not Found":
            return  # no such route: nothing is declared for it
        self.spec.validate_response(_OpenApiRequest(response.request), _OpenApiResponse(response))
        self.checked += 1


class Api:
    """A market set up through the API itself, with one client per participant."""

    def __init__(self, base: str, market) -> None:
        self.base = base
        self.contract = ContractCheck(base)
        with market.store.write() as s:
            _, token = issue_key(s, market.admin, "admin", market.admin.id)
        self.admin = self.client(token)

    def client(self, token: str | None, **headers) -> httpx.Client:
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=self.base,
            headers=headers,
            timeout=30,
            event_hooks={"response": [self.contract]},
        )

    def key(self, kind: str, ident: int) -> httpx.Client:
        r = self.admin.post("/v1/keys", json={"kind": kind, "id": ident})
        assert r.status_code == 201, r.text
        return self.client(r.json()["token"])

    def make(self, path: str, body: dict) -> int:
        r = self.admin.post(path, json=body)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def provider_body(
    network: int,
    name: str,
    services=("identity", "checksum", "anonymize"),
    capacity_bps: int = 10**9,
):
    return {
        "network_id": network,
        "name": name,
        "services": list(services),
        "capacity_bps": capacity_bps,
        "currency": "EUR",
        "per_gb_minor": 100,
        "per_mbps_hour_minor": 10,
    }


def standard_market(api: Api) -> Api:
    """Network "home" (provider ``home``: identity only; users alice and bob) and network
    "north" (providers ``north`` and ``south``), with a key for each user and provider."""
    a = api
    home_net = a.make("/v1/networks", {"name": "home"})
    a.north_net = north_net = a.make("/v1/networks", {"name": "north"})
    a.home = a.make("/v1/providers", provider_body(home_net, "home", ("identity",)))
    a.north = a.make("/v1/providers", provider_body(north_net, "north"))
    a.south = a.make("/v1/providers", provider_body(north_net, "south"))
    a.alice_id = a.make("/v1/users", {"name": "alice", "home_provider_id": a.home})
    a.bob_id = a.make("/v1/users", {"name": "bob", "home_provider_id": a.home})
    a.alice = a.key("user", a.alice_id)
    a.bob = a.key("user", a.bob_id)
    a.home_key = a.key("provider", a.home)
    a.north_key = a.key("provider", a.north)
    a.south_key = a.key("provider", a.south)
    return a


def block(**kw) -> dict:
    """A block-of-time request body starting in an hour, for an hour, at 10 Mbit/s."""
    start = datetime.now(UTC) + timedelta(hours=1)
    body = {
        "services": ["anonymize"],
        "starts_at": start.isoformat(),
        "ends_at": (start + timedelta(hours=1)).isoformat(),
        "max_rate_bps": 10_000_000,
    }
    return {**body, **kw}


def volume_job(api, client=None, volume=10**9) -> int:
    """A job: a volume of ``volume`` bytes of "identity", served by home at its list price."""
    r = (client or api.alice).post(
        "/v1/requests", json={"services": ["identity"], "volume_bytes": volume}
    )
    assert r.status_code == 201 and r.json()["status"] == "served", r.text
    award = api.alice.get("/v1/awards").json()["items"][0]
    return award["job"]["id"]


def refused(r: httpx.Response, field: str | None, status: int = 422) -> None:
    """``r`` is an error of ``status`` naming ``field`` (in its body and its message)."""
    assert r.status_code == status, r.text
    if field is not None:
        assert r.json()["field"] == field, r.json()
        assert field in r.json()["message"]
