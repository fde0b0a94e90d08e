"""The console under Starlette's test client: a browser's cookie jar, the CSRF token of the
page it saw last, the messages beside fields, for every console test."""

from __future__ import annotations

import re
from html import unescape

from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_FIELD_ERROR = re.compile(r'<p class="error" id="[^"]*" data-field="(\w+)">([^<]*)</p>')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html
    return found.group(1)


def field_errors(html: str) -> dict[str, str]:
    """The messages shown beside fields, by field."""
    return {field: unescape(said) for field, said in _FIELD_ERROR.findall(html)}


class Browser:
    """One browser's cookie jar on the app, and the CSRF token of the page it saw last."""

    def __init__(self, app) -> None:
        self.http = TestClient(app, follow_redirects=False)
        self.csrf = ""

    def sign_in(self, token: str):
        page = self.http.get("/signin")
        answer = self.http.post(
            "/signin", data={"csrf_token": csrf_of(page.text), "api_key": token}
        )
        if answer.status_code == 303:
            self.csrf = csrf_of(self.http.get(answer.headers["location"]).text)
        return answer

    def get(self, path: str):
        answer = self.http.get(path)
        if answer.status_code == 200 and _CSRF.search(answer.text):
            self.csrf = csrf_of(answer.text)
        return answer

    def post(self, path: str, data: dict, *, csrf: str | None = None):
        return self.http.post(
            path, data={"csrf_token": self.csrf if csrf is None else csrf, **data}
        )
