"""The T-SQL that the emulator's SQL Server front (`tds_server`) understands.

A batch is parsed with sqlglot's `tsql` dialect into one of:

- `SessionNoise`: what a client sends around its queries (`SET ...`, `USE [db]`,
  `BEGIN TRAN`, `COMMIT`, `ROLLBACK`, `IF @@TRANCOUNT ...`), answered with nothing;
- `HistorySelect` / `HistoryCount`: a `SELECT` on the historian's `History` extension table
  (also `dbo.History`, `Runtime.dbo.History`), turned into a `HistoryQuery` the way the
  historian reads its `WHERE` clause: `TagName IN (...)` or `=`, literal `DateTime` bounds,
  `wwRetrievalMode`, `wwVersion` and `wwTimeZone` (absent: the server's local time);
- `CatalogSelect`: any other `SELECT`, transpiled to SQLite for the emulator's AVEVA-shaped
  tables.

Refused with SQL Server's error numbers where it has one: a History column that does not exist
(207), a History query without a `WHERE` or without a tag; anything but a `SELECT` and the
session statements (the front is read-only), other History predicates (`OR`, `Value > ...`,
the `ww*` options the emulator does not vary) and more than one `SELECT` in a batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlglot
from pysqlbridge.tds.result import QueryError
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from ww_assets.history_query import RETRIEVAL_MODES, HistoryQuery
from ww_assets.schema import HISTORY_COLUMNS

INVALID_COLUMN = 207
INVALID_OBJECT = 208
INCORRECT_SYNTAX = 102

HISTORY_TABLE = "history"
# The emulator's own storage of the points behind History: not a table of the Runtime database,
# so a query that works here only because it reads it would fail on a real historian.
_HIDDEN_TABLES = frozenset({"points"})
HISTORY_SOURCES: tuple[str, ...] = tuple(c.source for c in HISTORY_COLUMNS)
_SOURCE_INDEX = {name.lower(): index for index, name in enumerate(HISTORY_SOURCES)}
_TAGNAME = _SOURCE_INDEX["tagname"]

# SQL Server reads both forms whatever the session language (ISO 8601 with a `T`, and the
# ODBC canonical form with a space); up to 7 fractional digits, as datetime2(7) holds.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
)


@dataclass(frozen=True)
class SessionNoise:
    """Session set-up or transaction control: answered with an empty DONE."""


@dataclass(frozen=True)
class HistorySelect:
    """Rows of `History`: `columns` are (index in `HISTORY_COLUMNS`, output name), in order."""

    query: HistoryQuery
    columns: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class HistoryCount:
    """`SELECT TagName, COUNT(*) [AS x] FROM History WHERE ... GROUP BY TagName`."""

    query: HistoryQuery
    names: tuple[str, str]


@dataclass(frozen=True)
class CatalogSelect:
    """Any other `SELECT`, as SQLite text; `names` are the output column names (None: use
    what SQLite reports, e.g. for `*`)."""

    sqlite: str
    names: tuple[str, ...] | None


Statement = SessionNoise | HistorySelect | HistoryCount | CatalogSelect


def parse_batch(sql: str) -> Statement:
    """What one SQL batch asks for; raises `QueryError` for what the front refuses."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="tsql") if s is not None]
    except sqlglot.errors.SqlglotError as error:
        raise QueryError(
            f"Incorrect syntax: {str(error).splitlines()[0]}", number=INCORRECT_SYNTAX
        ) from None
    selects = [s for s in statements if not _is_session_noise(s)]
    if not selects:
        return SessionNoise()
    if len(selects) > 1 or not isinstance(selects[0], exp.Select):
        raise QueryError(
            "the historian emulator answers one SELECT per batch (it is read-only); got: "
            + " ".join(sql.split())[:200]
        )
    select = selects[0]
    table = select.args.get("from_", select.args.get("from"))  # renamed in sqlglot 28
    if (
        table is not None
        and isinstance(table.this, exp.Table)
        and table.this.name.lower() == HISTORY_TABLE
    ):
        return _history(select)
    return _catalog(select)


def _is_session_noise(statement: exp.Expression) -> bool:
    if isinstance(statement, (exp.Set, exp.Use, exp.Transaction, exp.Commit, exp.Rollback)):
        return True
    return isinstance(statement, exp.IfBlock) and "@@TRANCOUNT" in statement.sql("tsql").upper()


def _catalog(select: exp.Select) -> CatalogSelect:
    """The SELECT in SQLite's dialect: N'...' literals become plain strings, and database and
    schema qualifiers (`Runtime.dbo.Tag`) go, as the store holds the Runtime tables only."""
    tree = select.transform(
        lambda node: exp.Literal.string(node.this) if isinstance(node, exp.National) else node
    )
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    for table in select.find_all(exp.Table):
        if table.name.lower() in _HIDDEN_TABLES:
            raise QueryError(f"Invalid object name '{table.name}'.", number=INVALID_OBJECT)
    names: tuple[str, ...] | None = None
    if not any(isinstance(e, exp.Star) or e.is_star for e in select.expressions):
        # SQL Server names an expression column only by its alias.
        names = tuple(
            e.alias_or_name if isinstance(e, (exp.Column, exp.Alias)) else ""
            for e in select.expressions
        )
    try:
        return CatalogSelect(tree.sql(dialect="sqlite", unsupported_level=ErrorLevel.RAISE), names)
    except sqlglot.errors.SqlglotError as error:
        raise QueryError(f"the historian emulator cannot run this query: {error}") from None


# Clauses of a SELECT that the emulator's History does not answer (the pipeline sends none).
_HISTORY_REFUSED = {
    "joins": "JOIN", "distinct": "DISTINCT", "limit": "TOP", "order": "ORDER BY",
    "having": "HAVING", "offset": "OFFSET", "with_": "WITH", "with": "WITH",
}  # fmt: skip


def _history(select: exp.Select) -> HistorySelect | HistoryCount:
    for key, clause in _HISTORY_REFUSED.items():
        if select.args.get(key):
            raise QueryError(f"the historian emulator does not answer {clause} on History")
    group = select.args.get("group")
    counts = [e for e in select.expressions if isinstance(e.unalias(), exp.Count)]
    if counts or group is not None:
        return _count(select, _history_where(select), group)
    # Columns are bound before anything runs: an unknown one fails first, as on SQL Server.
    columns: list[tuple[int, str]] = []
    for expression in select.expressions:
        if isinstance(expression, exp.Star):
            columns.extend(enumerate(HISTORY_SOURCES))
            continue
        source = expression.unalias()
        if not isinstance(source, exp.Column):
            raise QueryError(
                "the historian emulator selects History columns only, not "
                + expression.sql("tsql")
            )
        columns.append((_history_index(source.name), expression.alias_or_name))
    return HistorySelect(_history_where(select), tuple(columns))


def _history_where(select: exp.Select) -> HistoryQuery:
    where = select.args.get("where")
    if where is None:
        raise QueryError(
            "a query on History needs a WHERE clause naming the tags and the time range "
            "(the historian retrieves History, it does not scan it)"
        )
    return _history_query(where.this)


def _count(select: exp.Select, query: HistoryQuery, group: exp.Group | None) -> HistoryCount:
    """The only aggregate the pipeline asks of History: rows per tag."""
    expressions = select.expressions
    grouped = [] if group is None else group.expressions
    if (
        len(expressions) != 2
        or not isinstance(expressions[0].unalias(), exp.Column)
        or _history_index(expressions[0].unalias().name) != _TAGNAME
        or not isinstance(expressions[1].unalias(), exp.Count)
        or not isinstance(expressions[1].unalias().this, exp.Star)
        or len(grouped) != 1
        or not isinstance(grouped[0], exp.Column)
        or _history_index(grouped[0].name) != _TAGNAME
    ):
        raise QueryError(
            "the historian emulator counts History only as "
            "SELECT TagName, COUNT(*) ... GROUP BY TagName"
        )
    count = expressions[1]
    return HistoryCount(query, (expressions[0].alias_or_name, count.alias if count.alias else ""))


def _history_index(name: str) -> int:
    try:
        return _SOURCE_INDEX[name.lower()]
    except KeyError:
        raise QueryError(f"Invalid column name '{name}'.", number=INVALID_COLUMN) from None


def _history_query(condition: exp.Expression) -> HistoryQuery:
    """The `HistoryQuery` of a History WHERE clause: a conjunction of the predicates the
    historian takes from it."""
    tags: list[str] | None = None
    start: tuple[datetime, bool] | None = None
    end: tuple[datetime, bool] | None = None
    options: dict[str, str] = {}
    for predicate in _conjuncts(condition):
        column = predicate.this if isinstance(predicate, (exp.In, exp.Binary)) else None
        if not isinstance(column, exp.Column):
            raise _unsupported(predicate)
        name = HISTORY_SOURCES[_history_index(column.name)]
        if name == "TagName" and isinstance(predicate, exp.In):
            found = [_text(value, predicate) for value in predicate.expressions]
            tags = found if tags is None else [t for t in tags if t in found]
        elif name == "TagName" and isinstance(predicate, exp.EQ):
            value = _text(predicate.expression, predicate)
            tags = [value] if tags is None else [t for t in tags if t == value]
        elif name == "DateTime" and isinstance(predicate, (exp.GT, exp.GTE)):
            start = (_datetime(predicate.expression, predicate), isinstance(predicate, exp.GTE))
        elif name == "DateTime" and isinstance(predicate, (exp.LT, exp.LTE)):
            end = (_datetime(predicate.expression, predicate), isinstance(predicate, exp.LTE))
        elif name in ("wwRetrievalMode", "wwVersion", "wwTimeZone") and isinstance(
            predicate, exp.EQ
        ):
            options[name] = _text(predicate.expression, predicate)
        else:
            raise _unsupported(predicate)
    if tags is None:
        raise QueryError("a query on History must name its tags (TagName IN (...) or =)")
    if start is None or end is None:
        raise QueryError(
            "the historian emulator needs both DateTime bounds (> or >= a start, < or <= an end)"
        )
    if not tags:
        # `TagName = 'a' AND TagName = 'b'`: no tag matches; HistoryQuery needs one, and a tag
        # name that cannot exist returns nothing.
        tags = [""]
    mode = options.get("wwRetrievalMode", "Cyclic")
    canonical = {m.lower(): m for m in RETRIEVAL_MODES}.get(mode.lower())
    try:
        return HistoryQuery(
            tags=tuple(tags),
            start=start[0],
            end=end[0],
            start_inclusive=start[1],
            end_inclusive=end[1],
            retrieval_mode=canonical or mode,
            time_zone=options.get("wwTimeZone"),
            version=options.get("wwVersion", "Latest"),
        )
    except ValueError as error:
        raise QueryError(str(error)) from None


def _conjuncts(condition: exp.Expression) -> list[exp.Expression]:
    condition = condition.unnest()
    if isinstance(condition, exp.And):
        return [*_conjuncts(condition.this), *_conjuncts(condition.expression)]
    return [condition]


def _unsupported(predicate: exp.Expression) -> QueryError:
    return QueryError(
        "the historian emulator does not support this History predicate: "
        + predicate.sql("tsql")
    )


def _text(value: exp.Expression, predicate: exp.Expression) -> str:
    if isinstance(value, exp.National) or (isinstance(value, exp.Literal) and value.is_string):
        return value.this
    raise QueryError(
        f"the historian emulator compares History columns with string literals only: "
        f"{predicate.sql('tsql')}"
    )


def _datetime(value: exp.Expression, predicate: exp.Expression) -> datetime:
    """A bound's literal as a naive datetime of whole microseconds (what `HistoryQuery` and
    Python hold; datetime2(7) counts 100 ns). A 7th digit that is not 0 moves the bound to the
    microsecond that keeps the comparison exact for points of whole microseconds: `>` and
    `<=` cut it (`> ...0.0000019` is `> ...0.000001`), `>=` and `<` round up."""
    text = _text(value, predicate)
    match = _DATETIME.fullmatch(text.strip())
    if match is None:
        raise QueryError(
            f"Conversion failed when converting date and/or time from character string: {text!r}",
            number=241,
        )
    year, month, day, hour, minute, second, fraction = match.groups()
    ticks = int((fraction or "").ljust(7, "0"))
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            ticks // 10,
        )  # fmt: skip
        if ticks % 10 and isinstance(predicate, (exp.GTE, exp.LT)):
            moment += timedelta(microseconds=1)
        return moment
    except (ValueError, OverflowError):
        raise QueryError(
            f"The conversion of a varchar data type to a datetime data type resulted in an "
            f"out-of-range value: {text!r}",
            number=242,
        ) from None
