"""The fixed words of a statement (headings, "(none)", "DRAFT") in the languages we carry.

Babel formats numbers, money and dates for any locale; these few words are ours. A language we
do not carry falls back to English. `words(locale)` picks by the locale's language.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_EN = {
    "statement": "Statement",
    "draft": "DRAFT",
    "home_provider": "Home provider",
    "user": "User",
    "number": "Number",
    "period": "Period",
    "content_hash": "Content hash",
    "finalized_at": "Finalized",
    "total": "Total",
    "subtotal": "Subtotal",
    "none": "(none)",
    "week": "Week {week}, {year}",
    "credit_for": "credit for statement {number}, line {line}",
    "profile": "Profile",
    # column headings
    "date": "Date",
    "provider": "Provider",
    "network": "Network",
    "service": "Service",
    "device": "Device",
    "phone": "Phone",
    "recipient": "Recipient",
    "kind": "Kind",
    "quantity": "Quantity",
    "amount": "Amount",
    "description": "Description",
    "day": "Day",
    "month": "Month",
}
_DE = {
    "statement": "Abrechnung",
    "draft": "ENTWURF",
    "home_provider": "Heimanbieter",
    "user": "Nutzer",
    "number": "Nummer",
    "period": "Zeitraum",
    "content_hash": "Inhalts-Hash",
    "finalized_at": "Abgeschlossen",
    "total": "Summe",
    "subtotal": "Zwischensumme",
    "none": "(keine)",
    "week": "KW {week}, {year}",
    "credit_for": "Gutschrift zu Abrechnung {number}, Posten {line}",
    "profile": "Profil",
    "date": "Datum",
    "provider": "Anbieter",
    "network": "Netz",
    "service": "Dienst",
    "device": "Gerät",
    "phone": "Telefon",
    "recipient": "Empfänger",
    "kind": "Art",
    "quantity": "Menge",
    "amount": "Betrag",
    "description": "Beschreibung",
    "day": "Tag",
    "month": "Monat",
}
_FR = {
    "statement": "Relevé",
    "draft": "BROUILLON",
    "home_provider": "Fournisseur d'origine",
    "user": "Utilisateur",
    "number": "Numéro",
    "period": "Période",
    "content_hash": "Empreinte",
    "finalized_at": "Clôturé",
    "total": "Total",
    "subtotal": "Sous-total",
    "none": "(aucun)",
    "week": "Semaine {week}, {year}",
    "credit_for": "avoir sur le relevé {number}, ligne {line}",
    "profile": "Profil",
    "date": "Date",
    "provider": "Fournisseur",
    "network": "Réseau",
    "service": "Service",
    "device": "Appareil",
    "phone": "Téléphone",
    "recipient": "Destinataire",
    "kind": "Type",
    "quantity": "Quantité",
    "amount": "Montant",
    "description": "Description",
    "day": "Jour",
    "month": "Mois",
}

WORDS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "en": MappingProxyType(_EN),
        "de": MappingProxyType({**_EN, **_DE}),
        "fr": MappingProxyType({**_EN, **_FR}),
    }
)


def words(language: str) -> Mapping[str, str]:
    """The words for a language code ("de"), English when we do not carry it."""
    return WORDS.get(language, WORDS["en"])
