"""Step 3 of the design: data collection, labels and verification."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from loopml.spec.base import StrictModel


class CsvSource(StrictModel):
    """Delimited text files (CSV/TSV); `path` may be a glob over many files."""

    type: Literal["csv"] = Field(description="Source plugin name.")
    path: str = Field(description="File path or glob, relative to the project folder.")
    delimiter: str = Field(default=",", description="Field delimiter (use '\\t' for TSV).")
    header: bool = Field(default=True, description="Whether the first line holds column names.")
    columns: list[str] | None = Field(default=None, description="Column names when the file has no header.")
    encoding: str = Field(default="utf-8", description="Text encoding of the file.")
    quote: str = Field(default='"', description="Quote character.")
    types: dict[str, str] = Field(
        default_factory=dict, description="Declared column types (DuckDB type names) overriding inference."
    )
    null_values: list[str] = Field(
        default_factory=list, description="Strings read as missing values (e.g. 'NA', '?'); empty fields always are."
    )


class ParquetSource(StrictModel):
    """Parquet files; `path` may be a glob."""

    type: Literal["parquet"] = Field(description="Source plugin name.")
    path: str = Field(description="File path or glob, relative to the project folder.")


class JsonlSource(StrictModel):
    """JSON lines files; `path` may be a glob."""

    type: Literal["jsonl"] = Field(description="Source plugin name.")
    path: str = Field(description="File path or glob, relative to the project folder.")


class SqlSource(StrictModel):
    """A SQL query against SQLite, PostgreSQL or DuckDB."""

    type: Literal["sql"] = Field(description="Source plugin name.")
    url: str = Field(
        description="SQLAlchemy-style URL: sqlite:///file.db, postgresql://user@host/db, duckdb:///file.duckdb."
    )
    query: str = Field(description="The query whose result is the source table.")


Source = Annotated[CsvSource | ParquetSource | JsonlSource | SqlSource, Field(discriminator="type")]


class ClickWithinWindow(StrictModel):
    """Natural label: an impression is positive when a matching event follows within a window."""

    type: Literal["event_within_window"] = Field(description="Label rule name.")
    impressions: str = Field(description="Source name of the impressions (the examples).")
    events: str = Field(description="Source name of the positive events (e.g. clicks).")
    keys: list[str] = Field(description="Columns that match an event to its impression.")
    impression_time: str = Field(description="Timestamp column of impressions.")
    event_time: str = Field(description="Timestamp column of events.")
    window_seconds: float = Field(gt=0, description="An event within this many seconds makes a positive.")
    label: str = Field(default="label", description="Name of the label column produced.")


class ThresholdLabel(StrictModel):
    """Natural label: positive when a column passes a threshold (e.g. rating >= 4)."""

    type: Literal["threshold"] = Field(description="Label rule name.")
    column: str = Field(description="Column compared with the threshold.")
    op: Literal[">=", ">", "<=", "<", "=="] = Field(default=">=", description="Comparison operator.")
    value: float = Field(description="Threshold value.")
    label: str = Field(default="label", description="Name of the label column produced.")


LabelRule = Annotated[ClickWithinWindow | ThresholdLabel, Field(discriminator="type")]


class HandLabels(StrictModel):
    """Labels from a file joined to the examples by key."""

    path: str = Field(description="CSV or Parquet file with the keys and the label.")
    keys: list[str] = Field(description="Join keys.")
    label: str = Field(default="label", description="Label column in the file.")


class Verification(StrictModel):
    """How snapshots are verified before anything downstream sees them."""

    schema_path: str = Field(default="schema.yaml", description="Schema file inferred from a reference snapshot.")
    max_missing_rate_increase: float = Field(
        default=0.1, ge=0, le=1, description="Allowed increase of a column's missing rate over the reference."
    )
    psi_warn: float = Field(default=0.1, ge=0, description="PSI above which a distribution change warns.")
    psi_error: float = Field(default=0.25, ge=0, description="PSI above which a distribution change is an error.")
    max_row_count_change: float = Field(
        default=0.5, ge=0, description="Allowed relative change of the row count against the reference."
    )
    freshness_hours: float | None = Field(
        default=None, gt=0, description="Newest timestamp must be at most this old (hours) when set."
    )
    fail_on: Literal["error", "warning", "never"] = Field(
        default="error", description="Lowest severity that stops the pipeline."
    )
    unique_keys: list[str] = Field(
        default_factory=list, description="Columns that together identify one example; duplicates are quarantined."
    )
    timestamp: str | None = Field(
        default=None, description="Timestamp column checked for freshness (defaults to `task.timestamp`)."
    )
    max_quarantine_rate: float = Field(
        default=0.05, ge=0, le=1, description="Share of rows failing row-level checks above which validation errors."
    )
    severities: dict[str, Literal["error", "warning", "info"]] = Field(
        default_factory=dict,
        description="Override the severity of a check by name (type, range, domain, nullability, missing_rate, "
        "key_duplicates, freshness, row_count, psi, columns, mixed_types, non_finite, control_bytes).",
    )
    max_domain_size: int = Field(
        default=50, ge=1, description="Columns with at most this many distinct values get a category domain."
    )
    non_finite: Literal["quarantine", "missing"] = Field(
        default="quarantine",
        description="What an infinite or NaN number (inf, -inf, 1e309, NaN) is: quarantined with its row, or "
        "read as a missing value.",
    )
    numeric_text_share: float = Field(
        default=0.9, gt=0.5, le=1,
        description="When the schema is inferred, a text column whose values are at least this share numbers "
        "is typed numeric; its other values ('n/a', 'thirty') are then quarantined by the type check.",
    )
    min_inference_rows: int = Field(
        default=500, ge=0,
        description="Ranges, category domains, non-nullability, missing-rate limits and the drift (PSI) "
        "reference are inferred only from at least this many rows (a small sample would reject clean data).",
    )
    range_tolerance: float = Field(
        default=0.1, ge=0,
        description="Inferred ranges are widened by this share of their width on each side (a non-negative "
        "column stays non-negative).",
    )

    @model_validator(mode="after")
    def _psi_order(self) -> Verification:
        if self.psi_warn > self.psi_error:
            raise ValueError(f"psi_warn ({self.psi_warn}) must not exceed psi_error ({self.psi_error})")
        return self


class Data(StrictModel):
    """Where the data comes from and how it becomes one verified table of examples."""

    sources: dict[str, Source] = Field(default_factory=dict, description="Named sources, by name.")
    transform: str | None = Field(
        default=None, description="Optional DuckDB SQL over the sources (by name) producing the example table."
    )
    labels: LabelRule | None = Field(default=None, description="Natural label rule over event logs.")
    hand_labels: HandLabels | None = Field(default=None, description="Labels joined from a file.")
    verification: Verification = Field(default_factory=Verification, description="Data verification settings.")
    incremental: bool = Field(
        default=True,
        description="When only new files appear in glob sources (and no transform or window label spans sources), "
        "ingest only the new rows into a new snapshot appended to the previous one.",
    )

    @model_validator(mode="after")
    def _names_exist(self) -> Data:
        if isinstance(self.labels, ClickWithinWindow):
            for role in ("impressions", "events"):
                name = getattr(self.labels, role)
                if name not in self.sources:
                    raise ValueError(
                        f"labels.{role} names source `{name}`, which is not declared "
                        f"(sources: {', '.join(self.sources) or 'none'})"
                    )
        return self
