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


def test_window_query_is_half_open_utc_full_with_every_value_a_parameter() -> None:
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
        # ISO 8601 with a T: read alike under every session language and DATEFORMAT.
        # Exclusive, the last 100-ns tick before the window: no initial-value row.
        "2025-11-01T23:59:59.9999999",
        "2025-11-03T00:00:00.0000000",
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


def test_tags_query_excludes_the_system_drivers_tags_not_names() -> None:
    sql, params = render_tags_tsql((1, 2, 3))
    tree = parse_tsql(sql)
    preds = {p.sql(dialect="tsql") for p in _predicates(tree)}
    assert preds == {"r.TagType IN (@p0, @p1, @p2)", "t.AcquisitionType <> @p3"}
    assert params == (1, 2, 3, 3)
    # AVEVA's TagRef has no Description: it comes from Tag (65431, 1220349).
    tables = {t.alias: t.name for t in tree.find_all(exp.Table)}
    assert tables == {"r": "TagRef", "t": "Tag", "a": "AnalogTag", "u": "EngineeringUnit"}
    description = next(c for c in tree.find_all(exp.Column) if c.name == "Description")
    assert description.table == "t"


def test_bounds_are_whole_microseconds() -> None:
    q = HistoryQuery(("A",), datetime(2025, 1, 1, 0, 0, 0, 250), datetime(2025, 1, 2, 0, 0, 0, 7))
    assert render_history_tsql(q)[1][1:3] == ("2025-01-01T00:00:00.0002509", "2025-01-02T00:00:00.0000070")
    closed = HistoryQuery(("A",), q.start, q.end, start_inclusive=True, end_inclusive=True)
    assert render_history_tsql(closed)[1][1:3] == ("2025-01-01T00:00:00.0002500", "2025-01-02T00:00:00.0000079")


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
