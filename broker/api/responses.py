"""What every operation answers, declared so the OpenAPI document describes it.

Routes return plain dicts built by `broker.views`; FastAPI checks them against these models
(a field missing or of the wrong type is a server error, caught by the tests on both databases)
and a client generated from ``/openapi.json`` gets real types. Money is integer minor units.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(Out, Generic[T]):
    items: list[T]
    next_cursor: str | None


class Reputation(Out):
    score: float
    count: int


class DeliveryRecordOut(Out):
    """A provider's measured deliveries (`broker.delivery_record`), beside its ratings."""

    jobs: int
    windows: int
    windows_met: int
    windows_met_share: float | None
    block_honoured_share: float | None
    failed_share: float | None
    summary: str


class Me(Out):
    kind: str
    id: int
    user_id: int | None
    device_id: int | None
    network_id: int | None
    provider_ids: list[int]


class NetworkOut(Out):
    id: int
    name: str


class ProviderOut(Out):
    id: int
    name: str
    network_id: int
    services: list[str]
    capacity_bps: int
    currency: str
    negotiates: Literal["policy", "manual"]
    reputation: Reputation
    delivery: DeliveryRecordOut


class DeviceRef(Out):
    id: int
    name: str


class PhoneRef(Out):
    id: int
    e164: str
    device_id: int | None


class UserOut(Out):
    id: int
    name: str
    home_provider_id: int
    devices: list[DeviceRef]
    phone_numbers: list[PhoneRef]
    reputation: Reputation


class DeviceOut(Out):
    id: int
    user_id: int
    name: str


class PhoneOut(Out):
    id: int
    user_id: int
    e164: str
    device_id: int | None


class KeyIssued(Out):
    prefix: str
    kind: str
    id: int
    label: str
    token: str | None
    note: str


class KeyRevoked(Out):
    prefix: str
    revoked_at: datetime


class Member(Out):
    kind: Literal["user", "device", "phone", "address"]
    value: int | str


class RequestOut(Out):
    id: int
    user_id: int
    device_id: int | None
    home_provider_id: int
    services: list[str]
    volume_bytes: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_rate_bps: int | None
    max_rate_bps: int | None
    data_cap_bytes: int | None
    max_price_minor: int | None
    currency: str
    # More bandwidth from history: the percentage max_rate_bps carries above the max rate the
    # user asked for (base_max_rate_bps, null without a grant); docs/billing.md, "Bandwidth".
    bandwidth_grant_pct: int = 0
    base_max_rate_bps: int | None = None
    source: str | None = None
    sink: str | None = None
    sealed_params: list[str] = []
    status: str
    reason: str
    members: list[Member]
    created_at: datetime
    group_id: int | None


class PledgeOut(Out):
    user_id: int
    max_minor: int


class GroupMember(Member):
    sponsored: bool


class GroupOut(Out):
    id: int
    request_id: int
    status: str
    reason: str
    currency: str
    split_rule: str
    pledged_total_minor: int
    pledges: list[PledgeOut]
    members: list[GroupMember]


class Move(Out):
    round: int
    side: Literal["buyer", "seller"]
    action: str
    by: str
    price_minor: int | None
    at: datetime


class NegotiationOut(Out):
    id: int
    request_id: int
    provider_id: int
    buyer_mode: str
    seller_mode: str
    currency: str
    deadline: datetime
    max_rounds: int
    status: str
    reason: str
    agreed_price_minor: int | None
    moves: list[Move]


class Block(Out):
    """What a bidder needs to price a share: never who the recipients are (``members`` is
    shown to the request's own parties and, after the close, to the winners)."""

    services: list[str]
    starts_at: datetime | None
    ends_at: datetime | None
    min_rate_bps: int | None
    max_rate_bps: int | None
    share_rate_bps: int | None
    data_cap_bytes: int | None
    home_network_id: int
    members: list[Member] | None = None


class Bidder(Out):
    provider_id: int
    provider: str
    reputation: Reputation
    delivery: DeliveryRecordOut


class BidShown(Out):
    bid_id: int
    provider_id: int
    provider: str
    price_minor: int
    revision: int
    submitted_at: datetime
    reputation: Reputation
    delivery: DeliveryRecordOut
    rank: int | None = None
    won: bool | None = None
    payment_minor: int | None = None
    passed_over: str | None = None
    share: int | None = None
    reputation_at_close: Reputation | None = None
    score: str | None = None


class AuctionOut(Out):
    id: int
    request_id: int
    auctioneer_id: int
    status: str
    reason: str
    quantity: int
    reserve_price_minor: int
    currency: str
    reputation_weight: float
    opens_at: datetime
    closes_at: datetime
    closed_at: datetime | None
    block: Block
    buyer_reputation: Reputation
    bid_count: int
    bidders: list[Bidder]
    bids: list[BidShown]


class AuctionSummary(Out):
    id: int
    request_id: int
    status: str
    closes_at: datetime
    quantity: int
    reserve_price_minor: int
    currency: str


class BidOut(Out):
    id: int
    auction_id: int
    provider_id: int
    price_minor: int
    revision: int
    submitted_at: datetime


class BidResult(Out):
    id: int
    auction_id: int
    provider_id: int
    price_minor: int
    revision: int
    rank: int | None
    won: bool | None
    payment_minor: int | None
    passed_over: str | None


class Payer(Out):
    user_id: int
    share_minor: int


class JobRef(Out):
    id: int
    status: str


class AwardOut(Out):
    id: int
    request_id: int
    provider_id: int
    home_provider_id: int
    source: str
    negotiation_id: int | None
    auction_id: int | None
    share: int
    shares: int
    price_minor: int
    currency: str
    services: list[str]
    volume_bytes: int | None
    starts_at: datetime | None
    ends_at: datetime | None
    min_rate_bps: int | None
    max_rate_bps: int | None
    data_cap_bytes: int | None
    status: str
    payers: list[Payer]
    job: JobRef | None
    created_at: datetime


class JobOut(Out):
    id: int
    award_id: int
    provider_id: int
    status: Literal["queued", "claimed", "running", "done", "failed"]
    spec: dict
    updated_at: datetime
    token: int
    daemon: str | None
    lease_expires_at: datetime | None


class UsageCounters(Out):
    """A job's cumulative usage counters, as its reports carry them."""

    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    seconds: int
    windows_met: int
    windows_missed: int
    services: dict[str, dict[str, int]]


class Reported(UsageCounters):
    """The job's last acknowledged usage report (zeros before the first): a new claimer's
    cumulative counters continue from these."""

    sequence: int


class SealedBoxOut(Out):
    names: list[str]
    sealed_to: str
    box: str


class ClaimOut(Out):
    job: JobOut
    token: int
    lease_expires_at: datetime
    reported: Reported
    # The job's sealed parameters, for the claiming daemon only (docs/daemon.md).
    sealed: SealedBoxOut | None = None


class SealingKeyOut(Out):
    provider_id: int
    public_key: str
    fingerprint: str
    updated_at: datetime


class AwardSealingOut(Out):
    award_id: int
    job_id: int | None
    provider_id: int
    names: list[str]
    public_key: str | None
    fingerprint: str | None
    sealed: bool
    sealed_to: str | None
    sealed_at: datetime | None
    size: int | None


class HeartbeatOut(Out):
    job_id: int
    status: Literal["claimed", "running"]
    token: int
    lease_expires_at: datetime
    max_rate_bps: int | None
    min_rate_bps: int | None
    cancelled: bool


class JobEventOut(Out):
    event: str
    from_status: str | None
    to_status: str
    token: int
    daemon: str | None
    at: datetime
    detail: str


class MeasurementOut(Out):
    outcome: Literal["done", "failed"]
    token: int
    bytes: int
    packets: int
    windows: int
    windows_met: int
    windows_met_share: float | None
    started_at: datetime | None
    ended_at: datetime | None
    errors: int
    error: str
    block_honoured: bool
    volume_share: float | None
    score: float


class JobDetailOut(Out):
    job: JobOut
    events: list[JobEventOut]
    measured: MeasurementOut | None


class RatingOut(Out):
    id: int
    award_id: int
    direction: Literal["service", "payment"]
    user_id: int
    provider_id: int
    score: int
    comment: str
    rated_at: datetime


class ErrorDetail(Out):
    field: str
    message: str


class ErrorOut(Out):
    """Every error: a code, a message saying what was wrong and where, the thing and field it
    is about when there is one, and for a 500 the request id the log line carries too."""

    error: str
    message: str
    where: str | None = None
    field: str | None = None
    details: list[ErrorDetail] | None = None
    request_id: str | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 405, 409, 422, 500)
}


class Health(Out):
    status: str
    version: str
    database: str
    revision: str | None


class Ready(Out):
    ready: bool
    database: str
    revision: str | None
    expected_revision: str
    reason: str


class UsageLine(Out):
    kind: str
    amount_minor: int


class UsageReportOut(UsageCounters):
    job_id: int
    award_id: int
    sequence: int
    usage_at: datetime
    charged_minor: int
    currency: str | None
    tariff_id: int | None
    tariff_version: int | None
    lines: list[UsageLine]
    received_at: datetime


class ChargeTotal(Out):
    user_id: int
    kind: str
    currency: str
    amount_minor: int


class JobUsageOut(UsageCounters):
    job_id: int
    award_id: int
    status: str
    reports: int
    last_sequence: int | None
    usage_at: datetime | None
    charges: list[ChargeTotal]


class TariffOut(Out):
    id: int
    provider_id: int
    services: list[str]
    version: int
    active_from: datetime
    currency: str
    tariff: dict
    created_at: datetime
