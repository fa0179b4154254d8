"""A first ``loopml.yaml`` written from a data file (``loopml init DIR --from FILE --target COL``).

:func:`scaffold_from_data` reads a sample of a CSV, Parquet or JSON-lines file with DuckDB and
infers, from the target's values, the task (binary, multiclass, regression; ranking when a group
key is given), from each other column its kind and transforms, which columns are ids or timestamps
(left out of the features and named in comments), the baseline and the candidates. Every choice is
written with a comment saying why, so a reader can change it knowingly; the spec passes
``loopml spec check`` and runs as written.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "loans.csv").write_text("id,age,city,defaulted\\n" + "".join(
...     f"{i},{20 + i % 50},{'abc'[i % 3]},{i % 4 == 0}\\n" for i in range(200)))
>>> s = scaffold_from_data(d / "loans.csv", "defaulted", project_dir=d)
>>> s.task, s.ids, [f.column for f in s.inputs]
('binary', ['id'], ['age', 'city'])
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from loopml.errors import DataError, NotFound, SpecError

#: rows read to infer kinds and the task (the first rows of the file)
SAMPLE_ROWS = 20_000
#: integer or text targets with at most this many values are classes
MAX_CLASSES = 30
#: text columns with at most this many distinct values are one-hot encoded
ONEHOT_MAX = 30
_ID_NAME = re.compile(r"(^|[_\s.-])(id|uuid|guid|key)$|^id[_\s.-]", re.IGNORECASE)
_FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
            ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


@dataclass
class InputChoice:
    """One inferred input: its column, kind, transforms (spec dicts) and why."""

    column: str
    kind: str
    transforms: list[dict[str, Any]]
    why: str


@dataclass
class Scaffold:
    """What was inferred from the sample, and the spec text written from it (:attr:`text`)."""

    source_type: str
    source_path: str
    target: str
    task: str
    task_why: str
    rows_sampled: int
    inputs: list[InputChoice] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    timestamps: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    positive_label: Any = None
    group_key: str | None = None
    item_key: str | None = None
    delimiter: str | None = None
    text: str = ""


def _q(value: Any) -> str:
    """A YAML scalar (JSON is valid YAML flow syntax: names with spaces or colons stay safe)."""
    return json.dumps(value)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _read_sample(path: Path, fmt: str) -> tuple[pa.Table, str | None]:
    import duckdb

    con = duckdb.connect()
    try:
        delim: str | None = None
        if fmt == "parquet":
            scan = f"read_parquet({_sql_str(str(path))})"
        elif fmt == "jsonl":
            scan = f"read_json({_sql_str(str(path))}, format='newline_delimited')"
        else:
            rows_ = con.sql(f"SELECT Delimiter FROM sniff_csv({_sql_str(str(path))})").fetchall()
            sniffed = rows_[0] if rows_ else None
            delim = str(sniffed[0]) if sniffed else ","
            scan = f"read_csv({_sql_str(str(path))}, delim={_sql_str(delim)}, header=true)"
        table = con.sql(f"SELECT * FROM {scan} LIMIT {SAMPLE_ROWS}").to_arrow_table()
    except duckdb.Error as exc:
        raise DataError(f"{path}: cannot be read as {fmt}: {str(exc).splitlines()[0]}",
                        hint="init --from reads CSV/TSV (with a header line), Parquet and JSON lines") from None
    finally:
        con.close()
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows", hint="init --from needs a file with rows to infer from")
    return table, delim


def _is_num(t: pa.DataType) -> bool:
    return bool(pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t))


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t))


def _distinct(col: pa.ChunkedArray) -> list[Any]:
    return list(pc.unique(col.drop_null()).to_pylist())


def _infer_task(table: pa.Table, target: str, group_key: str | None) -> tuple[str, str, Any]:
    col = table.column(target)
    t = col.type
    values = _distinct(col)
    n = len(values)
    if n == 0:
        raise DataError(f"target `{target}` is empty in the first {table.num_rows:,} rows",
                        hint="choose a column with values with --target")
    if group_key is not None:
        if not (_is_num(t) or pa.types.is_boolean(t)):
            raise DataError(f"target `{target}` holds text ({values[0]!r}); a ranking target is a relevance number",
                            hint="use a 0/1 or graded relevance column, or drop --group-key for classification")
        return "ranking", f"--group-key {group_key} given: rows of one {group_key} form one ranked list", None
    if n == 1:
        raise DataError(f"target `{target}` has a single value ({values[0]!r}) in the first {table.num_rows:,} rows",
                        hint="a model needs at least two outcomes to learn from")
    if pa.types.is_boolean(t):
        return "binary", f"`{target}` is true/false", None
    if n == 2:
        positive: Any = None
        if not set(values) <= {0, 1}:
            counts = pc.value_counts(col.drop_null()).to_pylist()
            counts.sort(key=lambda c: (c["counts"], str(c["values"])))
            positive = counts[0]["values"]  # the rarer outcome is what is usually predicted
        return "binary", f"`{target}` has two values ({', '.join(map(repr, sorted(values, key=str)))})", positive
    if _is_text(t):
        if n > MAX_CLASSES:
            raise DataError(f"target `{target}` holds text with {n} distinct values in the sample: too many classes",
                            hint=f"init --from infers classification for up to {MAX_CLASSES} classes")
        return "multiclass", f"`{target}` holds {n} text classes", None
    integral = pa.types.is_integer(t) or all(float(v).is_integer() for v in values)
    if integral and n <= MAX_CLASSES and n * 20 <= table.num_rows:
        return "multiclass", f"`{target}` holds {n} whole-number values (at most {MAX_CLASSES}: classes)", None
    return "regression", f"`{target}` holds {n} distinct numbers: a quantity to predict", None


def _id_like(name: str, col: pa.ChunkedArray, rows: int) -> bool:
    t = col.type
    if not (pa.types.is_integer(t) or _is_text(t)):
        return False
    unique_share = len(_distinct(col)) / max(1, col.length() - col.null_count)
    if _ID_NAME.search(name.strip()):
        return unique_share > 0.5 or _is_text(t)
    return _is_text(t) and rows >= 50 and unique_share > 0.95 and _mean_len(col) < 40


def _mean_len(col: pa.ChunkedArray) -> float:
    lengths = pc.utf8_length(col.drop_null())
    m = pc.mean(lengths).as_py()
    return float(m or 0.0)


def _infer_input(name: str, col: pa.ChunkedArray, task: str) -> InputChoice | str:
    t = col.type
    if pa.types.is_dictionary(t):
        t = t.value_type
    missing = col.null_count
    rows = col.length()
    if rows == missing:
        return "empty in the sample"
    if pa.types.is_boolean(t) or _is_num(t):
        chain: list[dict[str, Any]] = []
        why = ["a number"]
        if missing:
            chain.append({"type": "impute", "strategy": "median", "add_indicator": True})
            why.append(f"{missing / rows:.0%} missing: median + an is-missing column")
        if not pa.types.is_boolean(t):
            chain.append({"type": "scale"})
            why.append("z-scored (for the linear model)")
        return InputChoice(name, "numeric", chain, "; ".join(why))
    if _is_text(t):
        n = len(_distinct(col))
        if _mean_len(col) >= 30 and n > ONEHOT_MAX:
            return InputChoice(name, "text", [{"type": "tfidf"}], "free text (long values): TF-IDF word n-grams")
        if n <= ONEHOT_MAX:
            return InputChoice(name, "categorical", [{"type": "onehot"}], f"{n} categories: one-hot")
        if task in ("binary", "regression"):
            return InputChoice(name, "categorical", [{"type": "target_encode"}],
                               f"{n}+ categories: target encoding (out-of-fold, smoothed)")
        return InputChoice(name, "categorical", [{"type": "ordinal", "min_frequency": 5}],
                           f"{n}+ categories: ordinal codes, rare ones (<5 rows) pooled")
    return f"type {t} has no inferred transform"


def _choose_item_key(table: pa.Table, ids: list[str], group_key: str | None) -> str | None:
    for c in ids:
        if c == group_key:
            continue
        col = table.column(c)
        if len(_distinct(col)) < col.length() - col.null_count:  # repeats across lists: an item
            return c
    return None


def scaffold_from_data(file: str | Path, target: str, *, project_dir: str | Path,
                       group_key: str | None = None, name: str | None = None) -> Scaffold:
    """Infer a spec from a sample of ``file`` (see the module docstring); :attr:`Scaffold.text` is the YAML."""
    path = Path(file)
    if not path.is_file():
        raise NotFound(f"data file {path} does not exist")
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise SpecError(f"{path}: cannot tell the format from the extension `{path.suffix}`",
                        hint="init --from reads .csv/.tsv, .parquet and .jsonl/.ndjson files")
    table, delim = _read_sample(path, fmt)
    cols = table.column_names
    for what, col in (("--target", target), ("--group-key", group_key)):
        if col is not None and col not in cols:
            import difflib

            close = difflib.get_close_matches(col, cols, n=1)
            raise SpecError(f"{what} `{col}` is not a column of {path}"
                            + (f"; did you mean `{close[0]}`?" if close else ""),
                            hint="columns: " + ", ".join(cols))
    task, task_why, positive = _infer_task(table, target, group_key)
    rel = os.path.relpath(path.resolve(), Path(project_dir).resolve())
    s = Scaffold(fmt, rel, target, task, task_why, table.num_rows, positive_label=positive, group_key=group_key,
                 delimiter=delim if delim not in (None, ",") else None)
    for c in cols:
        if c in (target, group_key):
            continue
        col = table.column(c)
        if pa.types.is_timestamp(col.type) or pa.types.is_date(col.type):
            s.timestamps.append(c)
        elif _id_like(c, col, table.num_rows):
            s.ids.append(c)
    if task == "ranking":
        s.item_key = _choose_item_key(table, s.ids, group_key)
    for c in cols:
        if c in (target, group_key) or c in s.ids or c in s.timestamps:
            continue
        got = _infer_input(c, table.column(c), task)
        if isinstance(got, str):
            s.skipped[c] = got
        else:
            s.inputs.append(got)
    if not s.inputs:
        raise DataError(f"{path}: no column besides the target, ids and timestamps can be an input",
                        hint="a model needs at least one input column")
    s.text = _render(s, name or Path(project_dir).resolve().name)
    return s


_BASELINE = {"binary": "prior", "multiclass": "prior", "regression": "mean", "ranking": "most_popular"}
_PRIMARY = {"binary": ("roc_auc", "higher"), "multiclass": ("accuracy", "higher"),
            "regression": ("rmse", "lower"), "ranking": ("ndcg@10", "higher")}


def _render(s: Scaffold, name: str) -> str:
    primary, direction = _PRIMARY[s.task]
    base = _BASELINE[s.task]
    out: list[str] = [
        f"# loopml.yaml written by `loopml init --from {s.source_path} --target {s.target}` from the first",
        f"# {s.rows_sampled:,} rows of the file. Every choice below is a guess from that sample, with its reason;",
        "# change what you know better. `loopml spec check` checks it against the data, `loopml run` runs it,",
        "# `loopml spec render` prints every field with its default.",
        "spec_version: 1",
        "",
        "project:",
        f"  name: {_q(name)}",
        f"  description: {_q(f'Predict {s.target} from {Path(s.source_path).name}.')}",
        "",
        "# 2. ML framing",
        "task:",
        f"  type: {s.task:<12}# {s.task_why}",
        f"  target: {_q(s.target)}",
    ]
    if s.positive_label is not None:
        out.append(f"  positive_label: {_q(s.positive_label)}   # the rarer of the two values counts as positive")
    if s.group_key:
        out.append(f"  group_key: {_q(s.group_key)}")
    if s.item_key:
        out.append(f"  item_key: {_q(s.item_key)}   # an id repeated across lists: the ranked item")
    if len(s.timestamps) == 1:
        out.append(f"  timestamp: {_q(s.timestamps[0])}   # the only date/time column: each example's event time")
    out += [
        f"  objective: {_q(f'predict {s.target}')}",
        "  # placeholder: the business metric this model is meant to move online (e.g. 'defaults among approved",
        "  # loans'); reports show it next to the offline metric once you name it here.",
        "  online_metric: null",
        "",
        "# 3. Data",
        "data:",
        "  sources:",
    ]
    src = f"{{type: {s.source_type}, path: {_q(s.source_path)}"
    if s.delimiter:
        src += f", delimiter: {_q(s.delimiter)}"
    out.append(f"    examples: {src}}}")
    out += ["", "# 4. Features: one entry per input column (an empty list would mean: every column, inferred at",
            "#    training time). Left out on purpose:"]
    for c in s.ids:
        out.append(f"#    - {c}: an identifier (unique per row or named like an id), no signal a model should learn")
    for c in s.timestamps:
        out.append(f"#    - {c}: a date/time; used to order examples, not as an input (add date_parts to use it)")
    if s.group_key:
        out.append(f"#    - {s.group_key}: the group key of the ranked lists")
    for c, why in s.skipped.items():
        out.append(f"#    - {c}: {why}")
    if not (s.ids or s.timestamps or s.group_key or s.skipped):
        out.append("#    (nothing: every column besides the target is an input)")
    out += ["features:", "  inputs:"]
    for f in s.inputs:
        chain = ", ".join("{" + ", ".join(f"{k}: {_q(v)}" for k, v in t.items()) + "}" for t in f.transforms)
        entry = f"{{column: {_q(f.column)}, kind: {f.kind}" + (f", transforms: [{chain}]" if chain else "") + "}"
        out.append(f"    - {entry}   # {f.why}")
    out += ["", "# 5. Model development"]
    out.append("training:")
    if len(s.timestamps) == 1:
        out.append("  # past → future: train on older rows, test on the newest (as the model will be used)")
        out.append(f"  split: {{type: time, time_column: {_q(s.timestamps[0])}}}")
    elif s.task == "ranking":
        out.append(f"  # a whole {s.group_key} list stays in one split (no list is half trained, half tested)")
        out.append(f"  split: {{type: group, group_column: {_q(s.group_key)}}}")
    elif s.task in ("binary", "multiclass"):
        out.append("  split: {type: stratified}   # each split keeps the class proportions")
    else:
        out.append("  split: {type: random}")
    out.append("  candidates:")
    if s.task == "ranking" and not s.item_key:
        out.append("    # no item column found: no most_popular baseline; name task.item_key to get one")
    else:
        out.append(f"    - {{type: {base}}}   # the baseline every model must beat (see evaluation)")
    linear = {"binary": "logistic", "multiclass": "logistic", "regression": "linear"}.get(s.task)
    if linear:
        out.append(f"    - {{type: {linear}}}   # a simple, explainable model")
    if s.task == "ranking":
        out.append("    - {type: lightgbm, name: lambdarank, params: {objective: lambdarank}}   # learns to order lists")
    else:
        out.append("    - {type: lightgbm}   # gradient-boosted trees: strong on tables; chosen only if significantly better")
    op = ">=" if direction == "higher" else "<="
    sign = "-" if direction == "higher" else "+"
    out += [
        "",
        "# 5b. Evaluation: the task's default metrics (the first is the primary one) with bootstrap intervals.",
        "evaluation:",
        f"  # the implicit baseline gate: a model is approved only if its {primary} is significantly better than",
        f"  # the {base} baseline's (paired bootstrap interval of the difference); otherwise nothing is promoted.",
        "  baseline_gate: true",
        "  gates:",
        f"    - {primary} {op} production {sign} 0.005   # never promote a model clearly worse than the one serving",
        "",
        "# 6. Deployment: an online service on 127.0.0.1 (`loopml serve`).",
        "deployment:",
        "  mode: online",
        "",
        "# 7. Monitoring: alert when a third of the inputs drift from the training data.",
        "monitoring:",
        "  alerts:",
        "    - {name: input-drift, metric: drift.share, op: \">\", threshold: 0.3}",
        "",
    ]
    return "\n".join(out)
