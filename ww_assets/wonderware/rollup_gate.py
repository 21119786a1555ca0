"""The rollup's gate: a day is rolled up only when every tag chunk of it is verified; why
not, and the coverage table its materialization or failure shows."""

from datetime import date

import dagster as dg

from ww_assets.wonderware.verdicts import PartitionVerdict

COVERAGE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("partition", "string"),
        dg.TableColumn("loaded", "bool"),
        dg.TableColumn("verified", "bool"),
        dg.TableColumn("failed_checks", "string"),
        dg.TableColumn("unchecked", "string"),
        dg.TableColumn("warnings", "string"),
    ]
)


def coverage_records(verdicts: list[PartitionVerdict]) -> list[dg.TableRecord]:
    return [
        dg.TableRecord(
            {
                "partition": v.key,
                "loaded": v.loaded,
                "verified": v.verified,
                "failed_checks": ", ".join(v.failed),
                "unchecked": ", ".join(v.unchecked),
                "warnings": ", ".join(v.warnings),
            }
        )
        for v in verdicts
    ]


def gate_message(day: date, verdicts: list[PartitionVerdict]) -> str | None:
    """Why `day` must not be rolled up, or None when every chunk of it is verified."""
    if not verdicts:
        return f"{day}: no tag chunks registered: materialize wonderware/tags first"
    problems = []
    for v in verdicts:
        if not v.loaded:
            problems.append(f"{v.key}: not loaded")
        elif v.failed:
            problems.append(f"{v.key}: failed {', '.join(v.failed)}")
        elif v.unchecked:
            problems.append(f"{v.key}: not verified since its latest load ({', '.join(v.unchecked)})")
    if not problems:
        return None
    return (
        f"{day} is not rolled up: {len(problems)} of {len(verdicts)} wonderware/history "
        "partitions are not verified by their blocking checks; re-materialize them (the checks "
        "run with them):\n" + "\n".join(problems)
    )
