"""Newest-first pages (the console's lists: the newest 50, then "Older") over the domain's
lists that run oldest first with an ``after`` cursor (`statements.list_charges`,
`awards.list_jobs`), so each page's rows still come from the function the API calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence

LISTED = 50  # rows per list page: the newest
BATCH = 500  # rows asked of the domain's list at a time while a page is gathered


def newest_page(ids: Sequence[int]) -> tuple[list[int], int | None]:
    """From the newest ``LISTED + 1`` ids of a list (newest first): the ids the page shows and
    the id the "Older" link starts before, or None when there is nothing older."""
    return list(ids[:LISTED]), ids[LISTED - 1] if len(ids) > LISTED else None


def rows_of(
    fetch: Callable[[int, int], list], shown: Sequence[int], id_of: Callable = lambda r: r.id
) -> list:
    """The rows among ``shown`` (ids), newest first, read through ``fetch(after, limit)``: the
    domain's oldest-first list, which decides who may see them (it is asked even for an empty
    page, so a refusal is the same on every page)."""
    if not shown:
        fetch(0, 0)
        return []
    wanted, last = set(shown), max(shown)
    after, found = min(shown) - 1, []
    while True:
        batch = fetch(after, BATCH)
        found += [r for r in batch if id_of(r) in wanted]
        if len(batch) < BATCH or id_of(batch[-1]) >= last:
            break
        after = id_of(batch[-1])
    return sorted(found, key=id_of, reverse=True)
