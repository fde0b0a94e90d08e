"""The console's frame: templates, the signed-in caller, CSRF-checked forms, error pages,
sign-in and sign-out. The pages (`broker.console.market`, `broker.console.glance`) use it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import lru_cache
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from broker.api.deps import store_of
from broker.console import attempts, sessions
from broker.console.forms import MAX_BODY, Form, amount, parse_body
from broker.errors import BrokerError, CsrfRefused, NotYours

log = logging.getLogger(__name__)

# What a page may load: its own styles and scripts, nothing from other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# The page set of each kind of principal: (path, label).
NAV = {
    "user": (
        ("/requests", "Requests"),
        ("/requests/new", "New request"),
        ("/negotiations", "Negotiations"),
        ("/auctions", "Auctions"),
        ("/awards", "Awards"),
        ("/statements", "Statements"),
        ("/account", "Credit"),
    ),
    "provider": (
        ("/auctions", "Auctions"),
        ("/negotiations", "Negotiations"),
        ("/awards", "Awards and jobs"),
        ("/statements", "Statements"),
        ("/settlements", "Settlements"),
    ),
    "admin": (
        ("/market", "Market"),
        ("/auctions", "Auctions"),
        ("/awards", "Awards"),
        ("/settlements", "Settlements"),
    ),
}
SIDE = {
    "user": "user",
    "device": "user",
    "phone_number": "user",
    "provider": "provider",
    "network": "provider",
    "admin": "admin",
}


def provider_names(session, ids) -> dict[int, str]:
    """Providers' names by id (a provider's card and name are public, as in the API), for
    pages that list providers by id: one query."""
    from sqlalchemy import select

    from broker.models import Provider

    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = session.execute(select(Provider.id, Provider.name).where(Provider.id.in_(wanted)))
    return {pid: name for pid, name in rows}


class SignInFirst(Exception):
    """A page asked for without a live session: the browser is sent to the sign-in page."""


def _when(value: str | datetime | None) -> str:
    if value is None:
        return ""
    at = datetime.fromisoformat(value) if isinstance(value, str) else value
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


def _rate(bps: int | None) -> str:
    return "" if bps is None else f"{bps / 1_000_000:g} Mbit/s"


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.1f}%"


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("broker.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, rate=_rate, percent=_percent)
    env.globals.update(amount=amount)
    return env


def render(
    request: Request,
    template: str,
    signed: sessions.Signed | None = None,
    *,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    """An HTML page: ``template`` with the caller, its page set and its CSRF token."""
    side = SIDE[signed.actor.kind] if signed else None
    html = (
        environment()
        .get_template(template)
        .render(
            me=signed.actor if signed else None,
            my_name=signed.name if signed else "",
            side=side,
            nav=NAV[side] if side else (),
            csrf=signed.csrf_token if signed else "",
            path=request.url.path,
            **context,
        )
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def error_page(request: Request, exc: BrokerError, signed: sessions.Signed | None) -> Response:
    title = {401: "Not signed in", 403: "Not yours to see", 404: "Not found"}.get(
        exc.http_status, "Refused"
    )
    if isinstance(exc, CsrfRefused):
        title = "Form refused"
    return render(request, "error.html", signed, status=exc.http_status, title=title, error=exc)


class ConsoleRoute(APIRoute):
    """A console route: a domain error becomes an HTML page with its status (the API's
    answer is JSON), a missing session a redirect to the sign-in page."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except SignInFirst:
                return RedirectResponse("/signin", status_code=303)
            except BrokerError as exc:
                return error_page(request, exc, request.scope.get("console_signed"))
            except RequestValidationError:
                return error_page(
                    request,
                    BrokerError("no such page: an id in the address is not a number"),
                    request.scope.get("console_signed"),
                )

        return guarded


def signed_in(request: Request) -> sessions.Signed:
    """The caller of a console page, from its session cookie; else to the sign-in page."""
    with store_of(request).read() as s:
        signed = sessions.resume(s, request.cookies.get(sessions.COOKIE))
    if signed is None:
        raise SignInFirst
    if sessions.seen_due(signed):
        with store_of(request).write() as s:
            sessions.seen(s, signed)
    request.scope["console_signed"] = signed
    return signed


Signed = Annotated[sessions.Signed, Depends(signed_in)]


async def _body(request: Request) -> Form:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BrokerError(f"a form of more than {MAX_BODY} bytes is refused")
    return Form(parse_body(body))


async def posted(request: Request, signed: Signed) -> Form:
    """A signed-in caller's form, its CSRF token checked (`CsrfRefused`, 403, otherwise)."""
    form = await _body(request)
    sessions.check_csrf(signed.csrf_token, form.values.get("csrf_token"))
    return form


Posted = Annotated[Form, Depends(posted)]


def require_side(signed: sessions.Signed, *sides: str) -> None:
    if SIDE[signed.actor.kind] not in sides:
        raise NotYours(f"this page is for a {' or '.join(sides)}; {signed.actor} is not one")


def cookie_options(request: Request) -> dict:
    # HTTP-only: no script reads it; SameSite=Lax: not sent with another site's POST (the
    # CSRF token is checked besides); Secure whenever the page came over HTTPS.
    return {
        "httponly": True,
        "samesite": "lax",
        "secure": request.url.scheme == "https",
        "path": "/",
    }


router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)


@router.get("/")
def home(request: Request) -> Response:
    with store_of(request).read() as s:
        signed = sessions.resume(s, request.cookies.get(sessions.COOKIE))
    if signed is None:
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse(NAV[SIDE[signed.actor.kind]][0][0], status_code=303)


@router.get("/console.css")
def stylesheet() -> Response:
    css = files("broker.console").joinpath("static/console.css").read_text()
    return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=300"})


@router.get("/console.js")
def script() -> Response:
    js = files("broker.console").joinpath("static/console.js").read_text()
    return Response(js, media_type="text/javascript", headers={"Cache-Control": "max-age=300"})


def _signin_page(request: Request, *, error: str = "", status: int = 200) -> Response:
    import secrets

    token = secrets.token_urlsafe(32)
    page = render(request, "signin.html", status=status, signin_csrf=token, error=error)
    page.set_cookie(sessions.SIGNIN_COOKIE, token, max_age=3600, **cookie_options(request))
    return page


@router.get("/signin")
def signin_form(request: Request) -> Response:
    return _signin_page(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    form = await _body(request)
    try:
        sessions.check_csrf(
            request.cookies.get(sessions.SIGNIN_COOKIE), form.values.get("csrf_token")
        )
    except BrokerError as exc:
        return _signin_page(request, error=exc.message, status=exc.http_status)
    api_key = form.text("api_key")
    address = request.client.host if request.client else ""

    def start() -> tuple[str, sessions.Signed] | BrokerError:
        # The refused try is counted in the same transaction, so it must commit: the error is
        # returned out of it, not raised through it.
        with store_of(request).write() as s:
            try:
                return sessions.start(
                    s,
                    api_key,
                    address=address,
                    user_agent=request.headers.get("user-agent", ""),
                )
            except BrokerError as exc:
                return exc

    from starlette.concurrency import run_in_threadpool

    started = await run_in_threadpool(start)
    if isinstance(started, BrokerError):
        if isinstance(started, attempts.TooManyAttempts):
            log.warning("console: sign-in refused for %s: %s", address, started.message)
            page = _signin_page(request, error=started.message, status=started.http_status)
            page.headers["Retry-After"] = str(started.retry_after)
            return page
        return _signin_page(request, error=started.message, status=started.http_status)
    token, signed = started
    log.info("console: %s signed in (session %d)", signed.actor, signed.session_id)
    answer = RedirectResponse(NAV[SIDE[signed.actor.kind]][0][0], status_code=303)
    answer.set_cookie(
        sessions.COOKIE,
        token,
        max_age=int(sessions.LIFETIME.total_seconds()),
        **cookie_options(request),
    )
    answer.delete_cookie(sessions.SIGNIN_COOKIE, path="/")
    return answer


@router.post("/signout")
def signout(request: Request, _form: Posted) -> Response:
    with store_of(request).write() as s:
        sessions.end(s, request.cookies.get(sessions.COOKIE))
    answer = RedirectResponse("/signin", status_code=303)
    answer.delete_cookie(sessions.COOKIE, path="/")
    return answer


@router.get("/sessions")
def sessions_page(request: Request, signed: Signed) -> Response:
    with store_of(request).read() as s:
        mine = sessions.list_sessions(s, signed)
    return render(request, "sessions.html", signed, sessions=mine)


@router.post("/sessions/others/end")
def end_other_sessions(request: Request, signed: Signed, _form: Posted) -> Response:
    with store_of(request).write() as s:
        ended = sessions.end_others(s, signed)
    log.info("console: %s ended %d other sessions", signed.actor, ended)
    return RedirectResponse("/sessions", status_code=303)


@router.post("/sessions/{session_id}/end")
def end_session(request: Request, session_id: int, signed: Signed, _form: Posted) -> Response:
    with store_of(request).write() as s:
        sessions.end_session(s, signed, session_id)
    if session_id == signed.session_id:  # ended this one: the same as signing out
        answer = RedirectResponse("/signin", status_code=303)
        answer.delete_cookie(sessions.COOKIE, path="/")
        return answer
    return RedirectResponse("/sessions", status_code=303)
