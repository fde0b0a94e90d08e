"""The market's web console: server-rendered pages at ``/`` of the broker's app.

Sign in with an API key (`broker.console.sessions`), then see what the key could see through
the API, page by page: a user its requests, auctions and awards; a provider the auctions it can
bid in, its bids and jobs; an admin the market at a glance. docs/console.md.
"""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Add the console's pages to ``app`` (after the API's routes)."""
    from broker.console import (
        account,
        current,
        deliveries,
        glance,
        market,
        negotiations,
        paying,
        settlements,
        site,
        statements,
    )

    for router in (
        site.router,
        market.router,
        negotiations.router,
        deliveries.router,
        current.router,  # before statements: /statements/current is not an id
        statements.router,
        account.router,
        paying.router,
        settlements.router,
        glance.router,
    ):
        app.include_router(router)
