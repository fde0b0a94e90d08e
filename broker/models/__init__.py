"""The broker's tables as SQLAlchemy 2 typed models (the data model is in docs/broker.md)."""

from broker.models.base import Base, UTCDateTime
from broker.models.billing import COUNTERS, Charge, TariffVersion, UsageReport
from broker.models.console import ConsoleSession, SignInFailure
from broker.models.credit import CreditDecision, CreditModel, CreditProfile
from broker.models.idempotency import IdempotencyRecord
from broker.models.ledger import LedgerEntry, LedgerPosting
from broker.models.market import (
    Auction,
    Bid,
    Group,
    Negotiation,
    Offer,
    Pledge,
    RequestMember,
    ServiceRequest,
)
from broker.models.outcomes import (
    Award,
    AwardPayer,
    DeliveryJob,
    JobEvent,
    JobMeasurement,
    Rating,
)
from broker.models.payments import Payment, PaymentMethod, Refund, TestGatewayOperation
from broker.models.principals import (
    PRINCIPAL_COLUMNS,
    Admin,
    ApiKey,
    Device,
    Network,
    PhoneNumber,
    PricePolicy,
    Provider,
    ProviderService,
    User,
)
from broker.models.sealing import ProviderSealingKey, SealedParams
from broker.models.settlements import SettlementBatch, SettlementLine, SettlementNetting
from broker.models.statements import (
    BillingSettings,
    CreditNote,
    DeviceEvent,
    Statement,
    StatementLine,
    StatementProfile,
)

__all__ = [
    "COUNTERS",
    "PRINCIPAL_COLUMNS",
    "Admin",
    "ApiKey",
    "Auction",
    "Award",
    "AwardPayer",
    "Base",
    "Bid",
    "BillingSettings",
    "Charge",
    "ConsoleSession",
    "CreditDecision",
    "CreditModel",
    "CreditNote",
    "CreditProfile",
    "DeliveryJob",
    "Device",
    "DeviceEvent",
    "Group",
    "IdempotencyRecord",
    "JobEvent",
    "JobMeasurement",
    "LedgerEntry",
    "LedgerPosting",
    "Negotiation",
    "Network",
    "Offer",
    "Payment",
    "PaymentMethod",
    "PhoneNumber",
    "Pledge",
    "PricePolicy",
    "Provider",
    "ProviderSealingKey",
    "ProviderService",
    "Rating",
    "Refund",
    "RequestMember",
    "SealedParams",
    "ServiceRequest",
    "SettlementBatch",
    "SettlementLine",
    "SettlementNetting",
    "SignInFailure",
    "Statement",
    "StatementLine",
    "StatementProfile",
    "TariffVersion",
    "TestGatewayOperation",
    "UTCDateTime",
    "UsageReport",
    "User",
]
