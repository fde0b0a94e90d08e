"""Request bodies of the HTTP API, each value bounded where it enters.

Integers are strict (1.5 or "5" is an error) and every one has the range of the column it is
kept in, so a number past 64 bits is a 422 naming its field, never a driver's OverflowError.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from broker.bounds import INT64_MAX

Id = Annotated[StrictInt, Field(ge=1, le=INT64_MAX, description="an id")]
Minor = Annotated[
    StrictInt, Field(ge=0, le=INT64_MAX, description="integer minor units (cents for EUR)")
]
Positive64 = Annotated[StrictInt, Field(ge=1, le=INT64_MAX)]
NonNegative64 = Annotated[StrictInt, Field(ge=0, le=INT64_MAX)]
Ppm = Annotated[StrictInt, Field(ge=0, le=1_000_000, description="millionths")]
Beta = Annotated[
    StrictInt, Field(ge=1, le=100_000_000, description="concession exponent in millionths")
]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Currency = Annotated[
    str, Field(min_length=3, max_length=3, pattern="^[A-Z]{3}$", description="ISO 4217 code")
]
Region = Annotated[
    str,
    Field(
        min_length=2, max_length=2, pattern="^[A-Za-z]{2}$", description="ISO 3166 alpha-2 region"
    ),
]
Service = Annotated[str, Field(min_length=1, max_length=40)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkIn(Body):
    name: Name


class ProviderIn(Body):
    network_id: Id
    name: Name
    services: list[Service] = Field(min_length=1, max_length=32)
    capacity_bps: NonNegative64
    currency: Currency
    per_gb_minor: Minor
    per_mbps_hour_minor: Minor
    reservation_ppm: Ppm = 800_000
    concession_beta_ppm: Beta = 1_000_000
    mode: Literal["policy", "manual"] = "policy"


class ProviderPatch(Body):
    services: list[Service] | None = Field(None, min_length=1, max_length=32)
    capacity_bps: NonNegative64 | None = None
    currency: Currency | None = None
    per_gb_minor: Minor | None = None
    per_mbps_hour_minor: Minor | None = None
    reservation_ppm: Ppm | None = None
    concession_beta_ppm: Beta | None = None
    mode: Literal["policy", "manual"] | None = None


class UserIn(Body):
    name: Name
    home_provider_id: Id


class DeviceIn(Body):
    name: Name


class PhoneIn(Body):
    number: str = Field(max_length=40, description="E.164 ('+14155552671') or national with region")
    region: Region | None = Field(None, description="region of a national number")
    device_id: Id | None = None


class KeyIn(Body):
    kind: Literal["admin", "network", "provider", "user", "device", "phone_number"]
    id: Id
    label: str = Field("", max_length=100)


class UserMember(Body):
    kind: Literal["user"]
    value: Id


class DeviceMember(Body):
    kind: Literal["device"]
    value: Id


class PhoneMember(Body):
    kind: Literal["phone"]
    value: str = Field(min_length=1, max_length=40)
    region: Region | None = None


class AddressMember(Body):
    kind: Literal["address"]
    value: str = Field(min_length=1, max_length=300)


MemberIn = Annotated[
    UserMember | DeviceMember | PhoneMember | AddressMember, Field(discriminator="kind")
]


class RequestIn(Body):
    services: list[Service] = Field(
        min_length=1, max_length=16, examples=[["anonymize", "checksum"]]
    )
    device_id: Id | None = None
    volume_bytes: Positive64 | None = None
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    min_rate_bps: Positive64 | None = None
    max_rate_bps: Positive64 | None = None
    data_cap_bytes: Positive64 | None = None
    max_price_minor: Minor | None = None
    currency: Currency | None = Field(None, description="the home provider's when left out")
    members: list[MemberIn] = Field([], max_length=1000)
    group: bool = False
    source: str | None = Field(
        None,
        max_length=1000,
        description="where the stream comes from: udp://HOST:PORT, "
        "zmq://HOST:PORT, iface:NAME or a capture file's "
        "name in the delivering daemon's files folder",
    )
    sink: str | None = Field(
        None, max_length=1000, description="where the delivered stream goes (as source)"
    )
    sealed_params: list[Annotated[str, Field(max_length=100)]] | None = Field(
        None,
        max_length=16,
        examples=[["encrypt.key"]],
        description="secret service parameters (SERVICE.PARAM) the requester seals to the "
        "winner's sealing key after the award (PUT /v1/awards/{id}/sealed-params); "
        "the job waits for them",
    )


class PledgeIn(Body):
    max_minor: Positive64


class NegotiationIn(Body):
    request_id: Id
    provider_id: Id
    mode: Literal["user", "agent"]
    deadline: AwareDatetime
    max_rounds: StrictInt = Field(20, ge=1, le=1000)
    max_price_minor: Minor | None = None
    min_reputation_ppm: Ppm = 0
    opening_price_minor: Minor | None = None
    buyer_beta_ppm: Beta = 1_000_000


class MoveIn(Body):
    action: Literal["offer", "accept", "reject"]
    price_minor: Minor | None = None


class AuctionIn(Body):
    request_id: Id
    closes_at: AwareDatetime
    reserve_price_minor: Positive64 = Field(description="the most paid for one share")
    quantity: StrictInt = Field(
        1, ge=1, le=1000, description="how many providers share the request, each 1/quantity of it"
    )
    reputation_weight_ppm: StrictInt = Field(1_000_000, ge=0, le=100_000_000)
    opens_at: AwareDatetime | None = None


class BidIn(Body):
    provider_id: Id
    price_minor: Minor


class RatingIn(Body):
    score: StrictInt = Field(ge=0, le=100, description="100: fully satisfactory")
    user_id: Id | None = Field(None, description="provider rating a payer: which one")
    comment: str = Field("", max_length=500)


class JobStatusIn(Body):
    """A status set by hand, outside the daemons' leases ("picked" is the old "claimed")."""

    status: Literal["queued", "claimed", "picked", "running", "done", "failed"]


Daemon = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        pattern=r"^\S(.*\S)?$",
        description="the daemon's name, e.g. its node's host name",
    ),
]
LeaseSeconds = Annotated[StrictInt, Field(ge=5, le=300, description="lease length, seconds")]
Token = Annotated[StrictInt, Field(ge=1, le=INT64_MAX, description="the claim's fencing token")]


class ClaimIn(Body):
    daemon: Daemon
    wait_s: StrictInt = Field(
        0, ge=0, le=30, description="long-poll: wait up to this long for a job (0: answer at once)"
    )
    lease_s: LeaseSeconds = 30
    sealing_key: str | None = Field(
        None,
        min_length=44,
        max_length=44,
        description="the public half of the sealing key the "
        "daemon holds: jobs with sealed parameters "
        "are claimable by it only when sealed to it",
    )


class SealingKeyIn(Body):
    public_key: str = Field(
        min_length=44, max_length=44, description="the X25519 public key, 32 bytes in base64"
    )
    replace: bool = Field(
        False,
        description="replace another key registered before (a "
        "rotation: boxes sealed to it reach no daemon)",
    )


class SealedBoxIn(Body):
    sealed_to: str = Field(
        min_length=44, max_length=44, description="the provider's sealing key the box is sealed to"
    )
    box: str = Field(
        min_length=1, max_length=6000, description="the sealed box in base64 (docs/daemon.md)"
    )


class HeartbeatIn(Body):
    token: Token
    lease_s: LeaseSeconds = 30


class TokenIn(Body):
    token: Token


class MeasuredIn(Body):
    """What the daemon measured of a job's delivery (docs/daemon.md, "Measured record")."""

    bytes: NonNegative64 = 0
    packets: NonNegative64 = 0
    windows: NonNegative64 = Field(0, description="min-rate windows measured")
    windows_met: NonNegative64 = Field(0, description="of them, at or above the min rate")
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    errors: NonNegative64 = 0


class FailIn(Body):
    token: Token
    error: str = Field(min_length=1, max_length=300)
    measured: MeasuredIn = MeasuredIn()


class HandbackIn(Body):
    token: Token
    reason: str = Field("", max_length=300)


class ServiceCountersIn(Body):
    packets: NonNegative64 = 0
    bytes: NonNegative64 = 0


class UsageIn(Body):
    """A usage report: the job's running totals (never the increase since the last report)."""

    sequence: Positive64 = Field(
        description="(job, sequence) identifies the report: send it again unchanged after an error"
    )
    at: AwareDatetime | None = Field(
        None, description="when the counters were read; now when left out, never in the future"
    )
    packets_in: NonNegative64 = 0
    packets_out: NonNegative64 = 0
    bytes_in: NonNegative64 = 0
    bytes_out: NonNegative64 = 0
    seconds: NonNegative64 = Field(0, description="seconds delivered")
    windows_met: NonNegative64 = Field(0, description="min-rate windows met")
    windows_missed: NonNegative64 = Field(0, description="min-rate windows missed")
    services: dict[Service, ServiceCountersIn] = Field({}, max_length=16)
    token: NonNegative64 | None = Field(
        None,
        description="the claim's fencing token: a "
        "report under a stale one is "
        "refused (409 lease_lost)",
    )


class CompleteIn(Body):
    token: Token
    measured: MeasuredIn = MeasuredIn()
    report: UsageIn | None = Field(
        None,
        description="the job's last usage report, taken in with the completion in one "
        "transaction (both or neither): a daemon's final report and its "
        "completion in one call",
    )


class TierIn(Body):
    up_to: Positive64 | None
    price: str = Field(min_length=1, max_length=60, description="a decimal string, e.g. '0.10'")


class DimensionIn(Body):
    tiers: list[TierIn] = Field(min_length=1, max_length=64)
    rate_unit: Positive64 = 1
    increment: Positive64 = 1
    first_increment: Positive64 | None = None
    tiering: Literal["graduated", "volume"] = "graduated"
    minimum: str = Field("0", min_length=1, max_length=60)
    maximum: str | None = Field(None, min_length=1, max_length=60)


class TariffIn(Body):
    """One version of a tariff (docs/billing.md); the provider is the path's."""

    services: list[Service] = Field(min_length=1, max_length=16)
    version: Positive64 | None = Field(None, description="the next version when left out")
    active_from: AwareDatetime
    currency: Currency
    connect_fee: str = Field("0", min_length=1, max_length=60)
    rounding: Literal["up", "down", "half-up", "half-even"] = "half-up"
    dimensions: dict[Annotated[str, Field(max_length=40)], DimensionIn] = Field(
        {}, max_length=8, description="bytes, packets, seconds, reserved_bps_seconds"
    )
