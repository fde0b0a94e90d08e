"""Service parameters sealed to the delivering provider: its daemons' public sealing key and,
per award, the box of secret parameters its requester sealed to it (docs/daemon.md, "Sealed
service parameters"). The broker holds public keys and ciphertext only."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from broker.models.base import Base, HasCreated

# A public key as text: 32 bytes in base64.
PublicKey = String(44)


class ProviderSealingKey(Base):
    """The X25519 public key a provider's daemons hold the private key of (one per provider:
    its daemons share it, as they share its API key). Replaced only on purpose (rotation)."""

    __tablename__ = "provider_sealing_keys"

    provider_id: Mapped[int] = mapped_column(ForeignKey("providers.id"), primary_key=True)
    public_key: Mapped[str] = mapped_column(PublicKey)
    updated_at: Mapped[datetime]


class SealedParams(HasCreated, Base):
    """An award's secret service parameters, sealed by its requester (or a payer) to the
    delivering provider's key.

    Made with the award when the request names them (``names``: ``SERVICE.PARAM,...``), empty
    until the box arrives: the award's job is not claimable before (`broker.dispatch`). The box
    is handed to the claiming daemon of the award's provider only, and only if it holds the key
    ``sealed_to`` names; it is in no view, log or error.
    """

    __tablename__ = "sealed_params"

    award_id: Mapped[int] = mapped_column(ForeignKey("awards.id"), primary_key=True)
    names: Mapped[str] = mapped_column(String(200))
    sealed_to: Mapped[str | None] = mapped_column(PublicKey)
    box: Mapped[bytes | None] = mapped_column(LargeBinary)
    sealed_by_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    sealed_at: Mapped[datetime | None]
