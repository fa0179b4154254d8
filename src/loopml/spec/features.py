"""Step 4 of the design: features, the feature store and the online store."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from loopml.spec.base import StrictModel


class Impute(StrictModel):
    """Fill missing values."""

    type: Literal["impute"] = Field(description="Transform name.")
    strategy: Literal["mean", "median", "most_frequent", "constant", "drop"] = Field(
        default="median", description="How to fill missing values ('drop' removes the row in training)."
    )
    fill_value: float | str | None = Field(default=None, description="Value for strategy 'constant'.")
    add_indicator: bool = Field(default=False, description="Add a 0/1 column telling the value was missing.")


class Scale(StrictModel):
    """Rescale a numeric column."""

    type: Literal["scale"] = Field(description="Transform name.")
    method: Literal["minmax", "zscore", "robust"] = Field(default="zscore", description="Scaling method.")


class Log(StrictModel):
    """log1p of a non-negative skewed column (negative values are clipped to 0)."""

    type: Literal["log"] = Field(description="Transform name.")


class Clip(StrictModel):
    """Clip to quantiles fitted on the training split."""

    type: Literal["clip"] = Field(description="Transform name.")
    lower_quantile: float = Field(default=0.01, ge=0, le=1, description="Lower quantile.")
    upper_quantile: float = Field(default=0.99, ge=0, le=1, description="Upper quantile.")


class Discretize(StrictModel):
    """Bucket a numeric column by fixed edges or quantiles."""

    type: Literal["discretize"] = Field(description="Transform name.")
    edges: list[float] | None = Field(default=None, description="Fixed bucket edges; quantiles when unset.")
    n_bins: int = Field(default=10, ge=2, description="Number of quantile buckets when `edges` is unset.")


class Ordinal(StrictModel):
    """Integer codes for categories, optionally in a declared order."""

    type: Literal["ordinal"] = Field(description="Transform name.")
    order: list[str] | None = Field(default=None, description="Declared order of categories; learned if unset.")
    min_frequency: int = Field(
        default=1, ge=1, description="With a learned order, categories rarer than this get the unknown code 0."
    )


class OneHot(StrictModel):
    """One-hot encoding with a minimum frequency and an unknown bucket."""

    type: Literal["onehot"] = Field(description="Transform name.")
    min_frequency: int = Field(default=1, ge=1, description="Categories rarer than this go to 'unknown'.")
    max_categories: int | None = Field(default=None, ge=1, description="Keep at most this many categories.")


class Hashing(StrictModel):
    """Hash categories into a fixed number of buckets."""

    type: Literal["hash"] = Field(description="Transform name.")
    n_buckets: int = Field(default=1024, ge=2, description="Number of hash buckets.")


class TargetEncode(StrictModel):
    """Mean target per category, fitted out-of-fold, smoothed toward the prior."""

    type: Literal["target_encode"] = Field(description="Transform name.")
    smoothing: float = Field(default=20.0, ge=0, description="Pseudo-count pulling rare categories to the prior.")
    folds: int = Field(default=5, ge=2, description="Out-of-fold folds used on the training split.")


class EmbeddingIds(StrictModel):
    """Index map for learned embeddings, with an out-of-vocabulary index 0."""

    type: Literal["embedding_ids"] = Field(description="Transform name.")
    min_frequency: int = Field(default=1, ge=1, description="Ids rarer than this map to the OOV index.")
    dim: int = Field(default=16, ge=1, description="Embedding dimension the neural model uses for this id.")


DatePart = Literal["year", "month", "day", "dayofweek", "hour", "minute"]


def _default_parts() -> list[DatePart]:
    return ["month", "dayofweek", "hour"]


class DateParts(StrictModel):
    """Calendar parts of a timestamp, optionally cyclically encoded."""

    type: Literal["date_parts"] = Field(description="Transform name.")
    parts: list[DatePart] = Field(default_factory=_default_parts, description="Parts to extract.")
    cyclical: bool = Field(default=True, description="Encode periodic parts as sin/cos pairs.")


class Cross(StrictModel):
    """Hashed cross of this column with other columns."""

    type: Literal["cross"] = Field(description="Transform name.")
    with_columns: list[str] = Field(description="Other columns in the cross.")
    n_buckets: int = Field(default=4096, ge=2, description="Hash buckets of the crossed value.")


class Tfidf(StrictModel):
    """TF-IDF of a text column."""

    type: Literal["tfidf"] = Field(description="Transform name.")
    max_features: int = Field(
        default=50000,
        ge=1,
        description="Largest vocabulary (terms with the highest document frequency); the output is a sparse "
        "matrix, so tens of thousands of terms cost only their non-zero entries.",
    )
    min_df: int = Field(
        default=2, ge=1, description="Keep only terms found in at least this many training documents."
    )
    ngram_max: int = Field(default=2, ge=1, description="Largest word n-gram.")


class SentenceEmbedding(StrictModel):
    """Sentence embedding of a text column from the offline MiniLM encoder."""

    type: Literal["sentence_embedding"] = Field(description="Transform name.")
    model: str = Field(default="all-MiniLM-L6-v2", description="Encoder name (shipped offline).")
    batch_size: int = Field(default=64, ge=1, description="Encoding batch size.")


class ImagePixels(StrictModel):
    """Pixel arrays to normalised float tensors."""

    type: Literal["image_pixels"] = Field(description="Transform name.")
    scale: float = Field(default=255.0, gt=0, description="Divide pixel values by this.")
    standardize: bool = Field(
        default=False, description="Then subtract the training mean pixel value and divide by its standard deviation."
    )


Transform = Annotated[
    Impute
    | Scale
    | Log
    | Clip
    | Discretize
    | Ordinal
    | OneHot
    | Hashing
    | TargetEncode
    | EmbeddingIds
    | DateParts
    | Cross
    | Tfidf
    | SentenceEmbedding
    | ImagePixels,
    Field(discriminator="type"),
]


class Feature(StrictModel):
    """One input column and its chain of transforms."""

    column: str = Field(description="Raw input column.")
    kind: Literal["numeric", "categorical", "text", "timestamp", "image"] = Field(
        default="numeric", description="What the raw column holds."
    )
    transforms: list[Transform] = Field(default_factory=list, description="Transforms applied in order.")
    name: str | None = Field(default=None, description="Output feature name; defaults to the column.")


class Aggregation(StrictModel):
    """One windowed aggregate of an entity feature table."""

    name: str = Field(description="Name of the feature produced.")
    function: Literal["count", "sum", "mean", "min", "max", "rate"] = Field(
        description="Aggregate; 'rate' is mean of a 0/1 column."
    )
    column: str | None = Field(default=None, description="Column aggregated (not needed for count).")
    window_days: float | None = Field(default=None, gt=0, description="Trailing window in days; all history if unset.")


class FeatureTable(StrictModel):
    """Per-entity feature values computed in batch with window SQL, stamped with event and creation time."""

    entity: list[str] = Field(description="Entity key columns (e.g. [user_id]).")
    source: str | None = Field(
        default=None,
        description="What the table is computed from: a data source name (data.sources) or a Parquet/CSV path "
        "relative to the project; unset: the verified examples (the lake snapshot after validation).",
    )
    timestamp: str = Field(default="event_time", description="Event-time column of the source rows.")
    created_timestamp: str | None = Field(
        default=None,
        description="Column telling when each source row became available (ingestion time; a late backfill has "
        "it after its event time). Unset: rows are available at their event time.",
    )
    delay_seconds: float | None = Field(
        default=None, ge=0,
        description="How long after its event a source row becomes known (e.g. a click label needs its click "
        "window). Unset: 0, except for tables built from the examples that aggregate the natural label of an "
        "event_within_window rule, which then wait for the label window.",
    )
    aggregations: list[Aggregation] = Field(default_factory=list, description="Aggregates computed per entity.")
    sql: str | None = Field(default=None, description="Custom DuckDB SQL instead of `aggregations`.")
    ttl_seconds: float | None = Field(default=None, gt=0, description="Online values older than this are missing.")
    include_same_time: bool | None = Field(
        default=None,
        description="Whether an example sees values stamped exactly at its own time. Unset: yes, except when the "
        "table is computed from the examples themselves (no `source`), where an example's own row must not feed "
        "its own features (label leakage).",
    )


class SqliteOnlineStore(StrictModel):
    """Online store in a SQLite file inside the workspace (default)."""

    type: Literal["sqlite"] = Field(description="Online store plugin name.")
    path: str = Field(default=".loopml/online.sqlite", description="SQLite file, relative to the project.")


class RedisOnlineStore(StrictModel):
    """Online store in Redis."""

    type: Literal["redis"] = Field(description="Online store plugin name.")
    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis URL.")


OnlineStore = Annotated[SqliteOnlineStore | RedisOnlineStore, Field(discriminator="type")]


class Features(StrictModel):
    """Input features, entity feature tables and where online values live."""

    inputs: list[Feature] = Field(default_factory=list, description="Input features and their transforms.")
    tables: dict[str, FeatureTable] = Field(default_factory=dict, description="Entity feature tables, by name.")
    online_store: OnlineStore = Field(
        default_factory=lambda: SqliteOnlineStore(type="sqlite"), description="Online feature store backend."
    )
