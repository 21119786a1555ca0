"""T-SQL rendering, checked by parsing it with sqlglot's T-SQL dialect."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest
import sqlglot
from sqlglot import exp

from ww_assets.history_query import (
    HistoryQuery,
    render_history_tsql,
    render_tags_tsql,
    window_query,
)
from ww_assets.schema import COLUMN_NAMES

ODD_TAGS = ("Operator's;--Note", "Kühlwasser Pumpe.Status", 'Zähler "7"', "x'); DROP TABLE t;--")


def parse_tsql(sql: str) -> exp.Select:
    """Parse rendered T-SQL, pymssql's `%s` placeholders turned into T-SQL variables."""
    counter = itertools.count()
    while "%s" in sql:
        sql = sql.replace("%s", f"@p{next(counter)}", 1)
    tree = sqlglot.parse_one(sql, read="tsql")
    assert isinstance(tree, exp.Select)
    return tree


def _predicates(tree: exp.Select) -> list[exp.Expression]:
    where = tree.args["where"].this
    return list(where.flatten()) if isinstance(where, exp.And) else [where]


def test_window_query_is_half_open_utc_full_with_bound_parameters() -> None:
    start = datetime(2025, 11, 2, tzinfo=timezone.utc)
    end = datetime(2025, 11, 3, tzinfo=timezone.utc)
    sql, params = render_history_tsql(window_query(ODD_TAGS, start, end))
    for tag in ODD_TAGS:
        assert tag not in sql
    assert "'" not in sql  # no literal at all: every value is a parameter
    tree = parse_tsql(sql)
    assert [s.alias_or_name for s in tree.expressions] == list(COLUMN_NAMES)
    assert tree.args["from_"].this.name == "History"
    preds = {p.sql(dialect="tsql") for p in _predicates(tree)}
    assert preds == {
        "TagName IN (@p0, @p1, @p2, @p3)",
        "DateTime > @p4",
        "DateTime < @p5",
        "wwRetrievalMode = @p6",
        "wwVersion = @p7",
        "wwTimeZone = @p8",
    }
    assert params == (
        *ODD_TAGS,
        "2025-11-01 23:59:59.999",  # exclusive, one millisecond before the window: no initial row
        "2025-11-03 00:00:00.000",
        "Full",
        "Latest",
        "UTC",
    )


def test_inclusive_bounds_and_server_local_time() -> None:
    q = HistoryQuery(("A",), datetime(2025, 1, 1), datetime(2025, 1, 2), True, True,
                     "Delta", time_zone=None)
    sql, params = render_history_tsql(q)
    preds = {p.sql(dialect="tsql") for p in _predicates(parse_tsql(sql))}
    assert "DateTime >= @p1" in preds and "DateTime <= @p2" in preds
    assert not any("wwTimeZone" in p for p in preds)
    assert params[-2:] == ("Delta", "Latest")


def test_tags_query_excludes_system_tags_by_parameter() -> None:
    sql, params = render_tags_tsql((1, 2, 3))
    tree = parse_tsql(sql)
    preds = {p.sql(dialect="tsql") for p in _predicates(tree)}
    assert preds == {"t.TagType IN (@p0, @p1, @p2)", "t.TagName NOT LIKE @p3"}
    assert params == (1, 2, 3, "Sys%")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tags": ()}, "at least one tag"),
        ({"retrieval_mode": "Sideways"}, "unknown retrieval mode 'Sideways'"),
        ({"start": datetime(2025, 1, 1, tzinfo=timezone.utc)}, "naive"),
    ],
)
def test_bad_queries_are_refused(kwargs: dict, message: str) -> None:
    base = {"tags": ("A",), "start": datetime(2025, 1, 1), "end": datetime(2025, 1, 2)}
    with pytest.raises(ValueError, match=message):
        HistoryQuery(**{**base, **kwargs})
