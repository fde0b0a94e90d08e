"""Request bodies of the HTTP API; strict integers for money so that 1.5 is an error."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

Minor = Field(ge=0, description="integer minor units (cents for EUR)")


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkIn(Body):
    name: str


class ProviderIn(Body):
    network_id: StrictInt
    name: str
    services: list[str] = Field(min_length=1)
    capacity_bps: StrictInt = Field(ge=0)
    currency: str = Field(min_length=3, max_length=3)
    per_gb_minor: StrictInt = Minor
    per_mbps_hour_minor: StrictInt = Minor
    reservation_ppm: StrictInt = Field(800_000, ge=0, le=1_000_000)
    concession_beta_ppm: StrictInt = Field(1_000_000, gt=0)
    mode: Literal["policy", "manual"] = "policy"


class ProviderPatch(Body):
    services: list[str] | None = None
    capacity_bps: StrictInt | None = Field(None, ge=0)
    currency: str | None = None
    per_gb_minor: StrictInt | None = Field(None, ge=0)
    per_mbps_hour_minor: StrictInt | None = Field(None, ge=0)
    reservation_ppm: StrictInt | None = Field(None, ge=0, le=1_000_000)
    concession_beta_ppm: StrictInt | None = Field(None, gt=0)
    mode: Literal["policy", "manual"] | None = None


class UserIn(Body):
    name: str
    home_provider_id: StrictInt


class DeviceIn(Body):
    name: str


class PhoneIn(Body):
    number: str = Field(description="E.164 ('+14155552671') or national with region")
    region: str | None = Field(None, description="ISO 3166 region for a national number")
    device_id: StrictInt | None = None


class KeyIn(Body):
    kind: Literal["admin", "network", "provider", "user", "device", "phone_number"]
    id: StrictInt
    label: str = ""


class MemberIn(Body):
    kind: Literal["user", "device", "phone", "address"]
    value: StrictInt | str
    region: str | None = None


class RequestIn(Body):
    services: list[str] = Field(min_length=1, examples=[["anonymize", "checksum"]])
    device_id: StrictInt | None = None
    volume_bytes: StrictInt | None = Field(None, gt=0)
    starts_at: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    min_rate_bps: StrictInt | None = Field(None, gt=0)
    max_rate_bps: StrictInt | None = Field(None, gt=0)
    data_cap_bytes: StrictInt | None = Field(None, gt=0)
    max_price_minor: StrictInt | None = Field(None, ge=0)
    currency: str | None = None
    members: list[MemberIn] = []
    group: bool = False


class PledgeIn(Body):
    max_minor: StrictInt = Field(gt=0)


class NegotiationIn(Body):
    request_id: StrictInt
    provider_id: StrictInt
    mode: Literal["user", "agent"]
    deadline: AwareDatetime
    max_rounds: StrictInt = Field(20, ge=1, le=1000)
    max_price_minor: StrictInt | None = Field(None, ge=0)
    min_reputation_ppm: StrictInt = Field(0, ge=0, le=1_000_000)
    opening_price_minor: StrictInt | None = Field(None, ge=0)
    buyer_beta_ppm: StrictInt = Field(1_000_000, gt=0)


class MoveIn(Body):
    action: Literal["offer", "accept", "reject"]
    price_minor: StrictInt | None = Field(None, ge=0)


class AuctionIn(Body):
    request_id: StrictInt
    closes_at: AwareDatetime
    reserve_price_minor: StrictInt = Field(gt=0)
    quantity: StrictInt = Field(1, ge=1, le=1000)
    reputation_weight_ppm: StrictInt = Field(1_000_000, ge=0)
    opens_at: AwareDatetime | None = None


class BidIn(Body):
    provider_id: StrictInt
    price_minor: StrictInt = Minor


class RatingIn(Body):
    score: StrictInt = Field(ge=0, le=100, description="100: fully satisfactory")
    user_id: StrictInt | None = Field(None, description="provider rating a payer: which one")
    comment: str = Field("", max_length=500)


class JobStatusIn(Body):
    status: Literal["queued", "picked", "running", "done", "failed"]
