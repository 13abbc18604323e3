"""`CohortReport`: what happened to every row of the input tables when a cohort was built.

For each table, rows in = rows used + rows dropped, and every dropped row has a reason. Patients are
counted the same way (patients in = the distinct patient ids of the visit and outcome tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ehrseq.errors import option

#: Why rows or patients are dropped, in the order they are applied, with their explanation.
DROP_REASONS: dict[str, str] = {
    "no_outcome": "patient has visits but no outcome row (unmatched='drop')",
    "no_visits": "patient has an outcome row but no visit (unmatched='drop')",
    "merged_duplicates": "duplicate (patient, time) visits merged into one (duplicates='merge')",
    "at_or_after_outcome": "visit at or after the outcome time (it would leak the outcome)",
    "no_visit_before_outcome": "every visit of the patient is at or after the outcome time",
    "truncated_max_visits": "older than the patient's most recent max_visits visits",
    "patient_dropped": "row of a patient who is not in the cohort",
}


#: How the report names the rules of ``data_specs/visits.json`` ``inference_rules``.
RULE_LABELS: dict[str, str] = {
    "declared": "declared",
    "float": "float columns",
    "integer": "integer columns",
    "text_numbers": "text numbers (null markers read as missing)",
    "string": "text columns",
    "boolean": "boolean columns",
}


@dataclass
class RowCount:
    """Rows of one table: ``n_in == n_used + sum(dropped.values())``."""

    n_in: int
    n_used: int
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        return self.n_in == self.n_used + self.n_dropped

    def to_dict(self) -> dict[str, Any]:
        return {"in": self.n_in, "used": self.n_used, "dropped": dict(self.dropped)}


@dataclass
class CohortReport:
    """Counts of a table-to-cohort build; print it, or ``to_dict()`` for logging.

    ``visits``, ``outcomes`` and ``multi_outcomes`` count rows of the input tables; ``patients``
    counts distinct patient ids. ``events`` counts used patients by event type (0 = censored).
    """

    visits: RowCount
    patients: RowCount
    outcomes: RowCount | None
    multi_outcomes: RowCount | None
    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    codes: str | None
    ignored_columns: tuple[str, ...]
    clock: str
    origin: str
    max_visits: int | None
    events: dict[int, int]
    multi_events: dict[str, int]
    visits_per_patient: dict[str, float]
    feature_rules: dict[str, str] = field(default_factory=dict)

    @property
    def balanced(self) -> bool:
        """Whether every table's arithmetic holds (rows in = used + dropped)."""
        counts = [self.visits, self.patients, self.outcomes, self.multi_outcomes]
        return all(c.balanced for c in counts if c is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "visits": self.visits.to_dict(),
            "patients": self.patients.to_dict(),
            "outcomes": None if self.outcomes is None else self.outcomes.to_dict(),
            "multi_outcomes": None if self.multi_outcomes is None else self.multi_outcomes.to_dict(),
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "codes": self.codes,
            "ignored_columns": list(self.ignored_columns),
            "clock": self.clock,
            "origin": self.origin,
            "max_visits": self.max_visits,
            "events": {str(k): v for k, v in self.events.items()},
            "multi_events": dict(self.multi_events),
            "visits_per_patient": dict(self.visits_per_patient),
            "feature_rules": dict(self.feature_rules),
        }

    def __str__(self) -> str:
        lines = ["Cohort report"]
        for name, count in (("visits", self.visits), ("patients", self.patients), ("outcome rows", self.outcomes),
                            ("multi-event rows", self.multi_outcomes)):
            if count is None:
                continue
            lines.append(f"  {name:<17}{count.n_in:>12,} in {count.n_used:>12,} used {count.n_dropped:>10,} dropped")
            for reason, n in count.dropped.items():
                if n:
                    lines.append(f"    - {n:>10,}  {reason}: {DROP_REASONS[reason]}")
        if self.visits_per_patient:
            stats = self.visits_per_patient
            lines.append(f"  visits per patient: min {stats['min']:g}, median {stats['median']:g}, "
                         f"mean {stats['mean']:.1f}, max {stats['max']:g}")
        if self.events:
            parts = ", ".join(f"{'censored' if k == 0 else f'type {k}'}: {n:,}" for k, n in sorted(self.events.items()))
            lines.append(f"  outcomes: {parts}")
        if self.multi_events:
            lines.append("  multi-event observed: " + ", ".join(f"{k}: {n:,}" for k, n in self.multi_events.items()))
        lines.append(f"  clock: {self.clock}; origin: {self.origin}"
                     + (f"; max_visits: {self.max_visits}" if self.max_visits else ""))
        lines.append(f"  numeric ({len(self.numeric)}): {self._by_rule(self.numeric)}")
        lines.append(f"  categorical ({len(self.categorical)}): {self._by_rule(self.categorical)}")
        if any(rule != "declared" for rule in self.feature_rules.values()):
            lines.append("  (column roles inferred by the rules of data_specs/visits.json 'inference_rules'; "
                         f"pass {option('numeric')} / {option('categorical')} to decide otherwise)")
        lines.append(f"  codes: {self.codes or '-'}")
        if self.ignored_columns:
            lines.append(f"  ignored columns: {', '.join(self.ignored_columns)}")
        return "\n".join(lines)

    def _by_rule(self, columns: tuple[str, ...]) -> str:
        """``columns`` grouped by the rule that gave them their role: ``float: a, b; text: c``."""
        if not columns:
            return "-"
        if not self.feature_rules:
            return ", ".join(columns)
        groups: dict[str, list[str]] = {}
        for column in columns:
            groups.setdefault(self.feature_rules.get(column, "declared"), []).append(column)
        return "; ".join(f"{RULE_LABELS.get(rule, rule)}: {', '.join(names)}" for rule, names in groups.items())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython
        printer.text(str(self))
