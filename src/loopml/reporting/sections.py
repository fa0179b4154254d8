"""The seven steps of the design, each filled from the spec and from measured facts.

Every number in a section comes from :class:`~loopml.reporting.facts.Facts`; a step whose stage
has not run says so with a :class:`~loopml.reporting.document.Note`.
"""

from __future__ import annotations

import math
from typing import Any

from loopml.reporting.document import Bullets, Figure, Note, Section, Table, interval_chart
from loopml.reporting.facts import Facts
from loopml.spec import Spec


def fmt(v: Any, digits: int = 4) -> str:
    """A number for a table cell ("–" when missing)."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    return str(v)


def _not_run(stage: str, facts: Facts, what: str) -> Note:
    fail = facts.failures.get(stage)
    if fail:
        return Note(f"the `{stage}` stage failed ({' '.join(fail['error'])}); {what} will appear after a successful run.")
    return Note(f"the `{stage}` stage has not run in this workspace; {what} will appear after `loopml run`.")


def _gate_verdicts(facts: Facts) -> list[dict[str, Any]]:
    rep = facts.output_json("evaluate", "report") or {}
    gates = rep.get("gates")
    return gates if isinstance(gates, list) else []


def _leaderboard(facts: Facts) -> dict[str, Any] | None:
    board = facts.output_json("train", "leaderboard")
    return board if board and isinstance(board.get("candidates"), list) else None


def _winner(board: dict[str, Any] | None) -> dict[str, Any] | None:
    if not board:
        return None
    return next((c for c in board["candidates"] if c.get("name") == board.get("winner")), None)


def _label_rate(facts: Facts, spec: Spec) -> tuple[int | None, float | None]:
    """Rows and mean of the target in the validated table (the examples the models learn from)."""
    prof = (facts.output_json("validate", "report") or {}).get("profile", {})
    col = (prof.get("columns") or {}).get(spec.task.target) if isinstance(prof, dict) else None
    rows = facts.summary("validate").get("kept_rows") or facts.summary("ingest").get("rows")
    mean = col.get("mean") if isinstance(col, dict) else None
    return rows, mean


# -- 1. requirements ---------------------------------------------------------------------------
def requirements(spec: Spec, facts: Facts) -> Section:
    """Step 1: objective, constraints and how each was enforced, privacy, scale."""
    req = spec.requirements
    s = Section("requirements", "1. Requirements")
    s.add(
        Bullets(
            [
                f"Objective: {req.objective or '(not stated in the spec)'}",
                f"Success metric: {req.success_metric or '(not stated)'}",
                f"Project: {spec.project.description.strip() or spec.project.name}",
            ]
        )
    )
    board = _leaderboard(facts)
    win = _winner(board)
    gates = {g.get("gate"): g for g in _gate_verdicts(facts)}
    rows: list[list[str]] = []
    c = req.constraints
    if c.latency_p99_ms is not None:
        measured = f"{fmt(win.get('latency_p99_ms'), 3)} ms (winner `{win['name']}`)" if win else "not measured yet"
        excluded = [x["name"] for x in (board or {}).get("candidates", []) if any("latency" in r for r in x.get("reasons") or [])]
        how = "single-row p99 measured for every candidate at selection; over-budget candidates are not eligible"
        gate = next((g for k, g in gates.items() if k and k.startswith("latency")), None)
        if gate is not None:
            how += f"; gate `{gate['gate']}` {'passed' if gate.get('passed') else 'FAILED'}"
        if excluded:
            how += f"; excluded: {', '.join(excluded)}"
        rows.append([f"p99 latency ≤ {fmt(c.latency_p99_ms, 1)} ms (batch {c.latency_batch_size})", measured, how])
    if c.max_model_size_mb is not None:
        measured = f"{fmt(win.get('size_mb'), 3)} MB (winner)" if win else "not measured yet"
        excluded = [x["name"] for x in (board or {}).get("candidates", []) if any("size" in r for r in x.get("reasons") or [])]
        how = "artifact size measured for every candidate; larger ones are not eligible"
        if excluded:
            how += f"; excluded: {', '.join(excluded)}"
        rows.append([f"model size ≤ {fmt(c.max_model_size_mb, 1)} MB", measured, how])
    rows.append([f"deployment target: {c.deployment_target}", spec.deployment.mode, "serving mode of the spec"])
    priv = req.privacy
    manifest = facts.output_json("ingest", "manifest") or {}
    schema = {f.get("name"): f.get("type") for f in manifest.get("schema", []) if isinstance(f, dict)}
    for col in priv.hash:
        seen = schema.get(col)
        ev = f"stored as {seen} (HMAC-SHA256 with the key from ${priv.hash_key_env})" if seen else "not measured yet"
        rows.append([f"privacy: hash `{col}`", ev, "keyed hash applied at ingestion, before the lake"])
    for col in priv.drop:
        ev = ("absent from the snapshot schema" if col not in schema else "PRESENT in the snapshot (check!)") if schema else "not measured yet"
        rows.append([f"privacy: drop `{col}`", ev, "removed at ingestion"])
    for rule in priv.coarsen:
        rows.append([f"privacy: coarsen `{rule.column}` ({rule.method})", "applied at ingestion" if schema else "not measured yet", "precision reduced before the lake"])
    sc = req.scale
    if sc.rows is not None:
        rows.append([f"scale: {sc.rows:,} training rows expected", f"{fmt(facts.summary('ingest').get('rows'))} rows ingested", "planning figure"])
    if sc.qps is not None:
        rows.append([f"scale: {fmt(sc.qps, 0)} queries/s expected", _measured_qps(facts), "planning figure"])
    s.add(Table(["requirement", "measured", "how it is enforced"], rows, caption="Constraints and how each was enforced"))
    return s


def _measured_qps(facts: Facts) -> str:
    demo = facts.extras.get("demo") or {}
    rep = demo.get("replay") or {}
    if rep.get("rows_per_s"):
        return f"{fmt(rep['rows_per_s'], 0)} predictions/s in the replay ({fmt(rep.get('requests'))} requests)"
    return "not measured (no replay recorded)"


# -- 2. framing --------------------------------------------------------------------------------
def framing(spec: Spec, facts: Facts) -> Section:
    """Step 2: the ML task, inputs, outputs, label."""
    t = spec.task
    s = Section("framing", "2. Framing the problem as an ML task")
    out = {
        "binary": "P(positive) in [0, 1] and a 0/1 decision at the evaluation threshold",
        "multiclass": "class probabilities and the most likely class",
        "regression": "a real value",
        "ranking": "a score per item; items sorted by it within each group",
    }[t.type]
    rows = [
        ["task type", t.type],
        ["ML objective", t.objective or "(not stated)"],
        ["target (label)", f"`{t.target}`"],
        ["output", out],
        ["online metric it moves", t.online_metric or "(not stated)"],
        ["entity keys", ", ".join(t.entity_keys) or "–"],
        ["event time", t.timestamp or "–"],
    ]
    if t.group_key:
        rows.append(["ranking group / item", f"{t.group_key} / {t.item_key or '–'}"])
    labels = spec.data.labels
    if labels is not None:
        if labels.type == "event_within_window":
            rows.append(["label rule", f"natural label: a `{labels.events}` event on the same {', '.join(labels.keys)} "
                         f"within {fmt(labels.window_seconds, 0)} s of the impression"])
        else:
            rows.append(["label rule", f"natural label: `{labels.column} {labels.op} {labels.value}`"])
    bundle = facts.output_json("train", "bundle") or {}
    inputs = bundle.get("input_columns") or [f.column for f in spec.features.inputs]
    rows.append(["inputs (raw columns)", ", ".join(inputs) if inputs else "inferred from the table at training"])
    if bundle.get("feature_names"):
        rows.append(["model features", f"{len(bundle['feature_names'])} columns after the transforms"])
    n, mean = _label_rate(facts, spec)
    if mean is not None and t.type == "binary":
        rows.append(["label balance (measured)", f"{fmt(mean)} positive rate over {fmt(n)} examples"])
    elif mean is not None:
        rows.append(["target mean (measured)", f"{fmt(mean)} over {fmt(n)} examples"])
    s.add(Table(["", ""], rows))
    return s


# -- 3. data -----------------------------------------------------------------------------------
def data(spec: Spec, facts: Facts) -> Section:
    """Step 3: sources, ETL, labels, snapshot, profile and validation."""
    s = Section("data", "3. Data: collection, labels and verification")
    manifest = facts.output_json("ingest", "manifest") or {}
    src_rows = manifest.get("source_rows") or {}
    src_meta = manifest.get("sources") or {}
    rows = []
    for name, src in spec.data.sources.items():
        where = getattr(src, "path", None) or getattr(src, "url", "")
        files = len((src_meta.get(name) or {}).get("files") or [])
        rows.append([name, src.type, str(where), fmt(files) if manifest else "–", fmt(src_rows.get(name))])
    s.add(Table(["source", "type", "path / URL", "files", "rows read"], rows, caption="Sources"))
    if spec.data.transform:
        s.add(f"ETL transform (DuckDB SQL): {' '.join(spec.data.transform.split())}")
    sim = facts.simulation
    if sim:
        days = sim.get("days") or []
        s.add(
            "The event logs were produced by loopml's traffic simulator (calibrated on the KDD Cup 2012 track 2 "
            "sample: click rate per page position and depth, anonymous share, id frequencies). Each day's "
            "oracle ROC-AUC is that of the true click probabilities: the best any model can reach.",
            Table(
                ["date", "drift", "impressions", "clicks", "CTR", "oracle ROC-AUC"],
                [[d.get("date", ""), d.get("drift", ""), fmt(d.get("impressions")), fmt(d.get("clicks")),
                  fmt(d.get("ctr")), fmt(d.get("oracle_auc"))] for d in days],
                caption="Simulated traffic",
            ),
        )
    if facts.imported:
        s.add(*_imported(facts.imported, (facts.extras.get("demo") or {}).get("unseen_ids") or {}))
    if not facts.ran("ingest"):
        s.add(_not_run("ingest", facts, "the snapshot and its profile"))
        return s
    ing = facts.summary("ingest")
    s.add(
        Bullets(
            [
                f"Snapshot `{ing.get('snapshot')}` ({ing.get('kind')}): {fmt(ing.get('rows'))} rows, "
                f"{fmt(ing.get('columns'))} columns ({fmt(ing.get('new_rows'))} new in the latest ingestion).",
                f"Privacy applied at ingestion: {_privacy_line(manifest.get('privacy') or {})}.",
            ]
        )
    )
    if not facts.ran("validate"):
        s.add(_not_run("validate", facts, "the validation results"))
        return s
    val = facts.summary("validate")
    rep = facts.output_json("validate", "report") or {}
    counts = rep.get("counts") or {}
    s.add(
        f"Validation against the schema `{rep.get('schema_path', spec.data.verification.schema_path)}`"
        f"{' (inferred from this snapshot)' if val.get('schema_inferred') else ''}: {fmt(counts.get('checks'))} checks, "
        f"{fmt(counts.get('failed', val.get('failed_checks')))} failed, {fmt(counts.get('warnings', val.get('warnings')))} warnings; "
        f"{fmt(val.get('quarantined_rows'))} rows quarantined with their reason, {fmt(val.get('kept_rows'))} kept."
    )
    failing = [c for c in rep.get("checks", []) if isinstance(c, dict) and not c.get("passed")]
    if failing:
        s.add(Table(["check", "column", "severity", "message"],
                    [[c.get("check", ""), c.get("column") or "*", c.get("severity", ""), c.get("message", "")] for c in failing[:15]],
                    caption="Checks that did not pass"))
    cols = ((rep.get("profile") or {}).get("columns") or {}) if isinstance(rep.get("profile"), dict) else {}
    if cols:
        prof_rows = []
        for name, p in cols.items():
            if not isinstance(p, dict):
                continue
            rng = f"{fmt(p.get('min'))} … {fmt(p.get('max'))}" if p.get("kind") == "numeric" else ""
            top = p.get("top") or []
            top_s = ", ".join(f"{v} ({fmt(n)})" for v, n in top[:3]) if p.get("kind") == "string" else ""
            prof_rows.append([name, str(p.get("type", "")), fmt(p.get("missing_rate")), fmt(p.get("distinct")),
                              rng, fmt(p.get("mean")) if p.get("kind") == "numeric" else "", top_s[:80]])
        s.add(Table(["column", "type", "missing", "distinct", "range", "mean", "top values"], prof_rows,
                    caption="Profile of the validated snapshot"))
    return s


def _privacy_line(p: dict[str, Any]) -> str:
    parts = []
    if p.get("hashed"):
        parts.append(f"hashed {', '.join(p['hashed'])}")
    if p.get("dropped"):
        parts.append(f"dropped {', '.join(p['dropped'])}")
    if p.get("coarsened"):
        parts.append(f"coarsened {', '.join(str(c) for c in p['coarsened'])}")
    return "; ".join(parts) or "none declared"


def _imported(imp: dict[str, Any], unseen: dict[str, Any]) -> list[str | Table | Bullets]:
    """The note on event logs imported from a real click log (``import.json``, written by ``loopml.simulator.kdd``)."""
    src = imp.get("source") or {}
    days = imp.get("days") or []
    blocks: list[str | Table | Bullets] = [
        f"The event logs were imported from the real KDD Cup 2012 click log `{src.get('path', '')}` (sha256 "
        f"{str(src.get('sha256') or '–')[:16]}…, {fmt(src.get('rows_read'))} rows"
        f"{', capped' if src.get('capped') else ''}, click rate {fmt(src.get('ctr'))}). What the import assumed:",
        Bullets([str(d) for d in imp.get("decisions") or []]),
        Table(
            ["date", "file rows", "impressions", "clicks", "CTR", "role"],
            [[d.get("date", ""), f"{fmt(d.get('first_row'))}–{fmt(d.get('last_row'))}", fmt(d.get("impressions")),
              fmt(d.get("clicks")), fmt(d.get("ctr")), "held out, replayed" if d.get("held_out") else "training"]
             for d in days],
            caption="Imported days",
        ),
    ]
    if unseen:
        blocks.append(Table(
            ["id column", "replayed day: share never seen in training", "last training day: share unseen before it"],
            [[k, fmt(v.get("replayed")), fmt(v.get("last_training_day"))] for k, v in unseen.items() if isinstance(v, dict)],
            caption="New ids per day (the long tail behind id drift)",
        ))
    return blocks


# -- 4. features -------------------------------------------------------------------------------
def features(spec: Spec, facts: Facts) -> Section:
    """Step 4: inputs and transforms, entity feature tables, the online store."""
    f = spec.features
    s = Section("features", "4. Features and the feature store")
    if f.inputs:
        s.add(Table(
            ["input", "kind", "transforms (in order)"],
            [[x.column, x.kind, " → ".join(_transform_label(t) for t in x.transforms) or "default for the kind"] for x in f.inputs],
            caption="Declared inputs",
        ))
    else:
        s.add("No inputs declared: the feature pipeline infers them from the table (numeric → median impute; "
              "strings → ordinal codes with an unknown bucket), excluding the target, keys and time.")
    if f.tables:
        rows = []
        for name, tbl in f.tables.items():
            aggs = ", ".join(f"{a.name} = {a.function}({a.column or '*'}"
                             f"{f', {fmt(a.window_days, 0)} d' if a.window_days else ''})" for a in tbl.aggregations) or (tbl.sql or "")
            rows.append([name, ", ".join(tbl.entity), tbl.timestamp, aggs])
        s.add(Table(["feature table", "entity", "event time", "aggregates"], rows, caption="Entity feature tables (point-in-time joined)"),
              f"Online store: {f.online_store.type}.")
    if facts.ran("features"):
        fs = facts.summary("features")
        s.add(Bullets([f"{k}: {fmt(v) if not isinstance(v, (dict, list)) else v}" for k, v in fs.items()][:12]))
    else:
        s.add(_not_run("features", facts, "the point-in-time joined training table"))
    bundle = facts.output_json("train", "bundle") or {}
    if bundle.get("feature_names"):
        names = bundle["feature_names"]
        s.add(f"The fitted transform of the winning model produces {len(names)} features: "
              f"{', '.join(names[:40])}{' …' if len(names) > 40 else ''}.")
    return s


def _transform_label(t: Any) -> str:
    d = t.model_dump(exclude_defaults=True)
    typ = d.pop("type", getattr(t, "type", "?"))
    return f"{typ}({', '.join(f'{k}={v}' for k, v in d.items())})" if d else str(typ)


# -- 5. model development ----------------------------------------------------------------------
def models(spec: Spec, facts: Facts) -> Section:
    """Step 5a: split, sampling, candidates, the leaderboard and why the winner won."""
    tr = spec.training
    s = Section("models", "5. Model development")
    split = tr.split
    split_line = (
        f"Split: given by column `{split.column}` (values {', '.join(split.values.train)} / "
        f"{', '.join(split.values.valid)} / {', '.join(split.values.test)})."
        if split.type == "column" else
        f"Split: {split.type} ({fmt(1 - split.valid_fraction - split.test_fraction, 2)} train / "
        f"{fmt(split.valid_fraction, 2)} validation / {fmt(split.test_fraction, 2)} test"
        f"{f', ordered by {split.time_column}' if split.time_column else ''})."
    )
    s.add(Bullets([
        split_line,
        f"Sampling: {tr.sampling.type}; class imbalance: {tr.imbalance.method}; seed {tr.seed}.",
        "Candidates: " + ", ".join(f"{c.name or c.type} ({c.type}{', tuned' if c.tune else ''})" for c in tr.candidates) + ".",
    ]))
    board = _leaderboard(facts)
    if board is None:
        s.add(_not_run("train", facts, "the candidate table"))
        return s
    rec = facts.stages["train"]
    s.add(f"Latest training: run {rec.run_id}, ended {str(rec.ended_at)[:19]}"
          f"{' (a cache hit of an earlier execution)' if rec.status == 'cached' else ''}.")
    summ = facts.summary("train")
    counts = {k: v for k, v in summ.items() if k.endswith("_rows") or k in ("train", "valid", "test")}
    if counts:
        s.add("Rows per split (measured): " + ", ".join(f"{k} {fmt(v)}" for k, v in counts.items()) + ".")
    metric = board.get("metric", "metric")
    rows = []
    for c in board["candidates"]:
        ci = f"[{fmt(c.get('ci_low'))}, {fmt(c.get('ci_high'))}]" if c.get("ci_low") is not None else "–"
        status = "winner" if c.get("name") == board.get("winner") else ("eligible" if c.get("eligible") else "not eligible")
        rows.append([c.get("name", ""), c.get("model_type", ""), fmt(c.get("value")), ci, fmt(c.get("latency_p99_ms"), 3),
                     fmt(c.get("size_mb"), 3), fmt(c.get("train_s"), 2), status, "; ".join(c.get("reasons") or [])])
    s.add(Table(["candidate", "model", f"{metric} (validation)", "95% CI", "p99 ms", "size MB", "train s", "status", "notes"],
                rows, caption="Candidates, measured on this machine"))
    chart = interval_chart(
        [(c.get("name", ""), float(c["value"]) if c.get("value") is not None else float("nan"), c.get("ci_low"), c.get("ci_high"),
          c.get("name") == board.get("winner")) for c in board["candidates"]],
        title=f"{metric} on the validation split (95% CI)",
    )
    if chart:
        s.add(Figure(chart, f"{metric} of each candidate with its confidence interval; the winner starred"))
    if board.get("why"):
        s.add(f"Why the winner won: {board['why']}")
    return s


# -- 5b. evaluation ----------------------------------------------------------------------------
def evaluation(spec: Spec, facts: Facts) -> Section:
    """Step 5b: test metrics with confidence intervals, comparisons, slices, fairness, gates."""
    s = Section("evaluation", "6. Evaluation on the test split")
    rep = facts.output_json("evaluate", "report")
    if rep is None:
        gates = ", ".join(f"`{g}`" for g in spec.evaluation.gates) or "none"
        s.add(f"Declared gates: {gates}.", _not_run("evaluate", facts, "metrics with intervals, slices and gate verdicts"))
        return s
    conf = rep.get("confidence", spec.evaluation.confidence)
    s.add(f"{fmt(rep.get('rows'))} test rows; {fmt(conf * 100 if isinstance(conf, float) else conf, 0)}% bootstrap intervals "
          f"({(rep.get('bootstrap') or {}).get('resamples', '?')} resamples, {(rep.get('bootstrap') or {}).get('method', '?')}). "
          f"Primary metric: {rep.get('primary_metric', '?')}.")
    mrows = []
    for k, m in (rep.get("metrics") or {}).items():
        if not isinstance(m, dict):
            continue
        mrows.append([k, fmt(m.get("value")), f"[{fmt(m.get('lower'))}, {fmt(m.get('upper'))}]",
                      "higher" if m.get("higher_is_better") else "lower", m.get("online_metric") or "–"])
    s.add(Table(["metric", "value", "interval", "better", "stands for online"], mrows, caption="Test metrics"))
    oracle = _oracle(facts)
    auc = (rep.get("metrics") or {}).get("roc_auc") or {}
    if oracle is not None and auc.get("value") is not None:
        s.add(f"Ceiling: the simulator's true click probabilities reach ROC-AUC {fmt(oracle)} on the same kind of "
              f"traffic; the model reaches {fmt(auc['value'])} ({fmt(auc['value'] - 0.5)} of the "
              f"{fmt(oracle - 0.5)} achievable above chance).")
    comps = rep.get("comparisons") or {}
    crow = []
    for ref, byk in comps.items():
        for k, c in (byk or {}).items():
            d = c.get("difference") or {}
            crow.append([ref, k, fmt(c.get("candidate")), fmt(c.get("reference_value")), fmt(d.get("value")),
                         f"[{fmt(d.get('lower'))}, {fmt(d.get('upper'))}]", fmt(c.get("significant")), c.get("verdict", "")])
    if crow:
        s.add(Table(["against", "metric", "candidate", "reference", "difference", "interval", "significant", "verdict"], crow,
                    caption="Paired comparisons on the same test rows"))
    slices = [x for x in rep.get("slices") or [] if isinstance(x, dict)]
    if slices:
        srows = []
        for x in slices[:24]:
            prim = x.get("primary") or {}
            srows.append([x.get("column", ""), str(x.get("slice", "")), fmt(x.get("n")), fmt(prim.get("value")),
                          f"[{fmt(prim.get('lower'))}, {fmt(prim.get('upper'))}]"])
        s.add(Table(["slice column", "slice", "rows", rep.get("primary_metric", "metric"), "interval"], srows,
                    caption="Slices (worst first)"))
        bars = [(f"{x.get('column')}={x.get('slice')}", (x.get("primary") or {}).get("value"),
                 (x.get("primary") or {}).get("lower"), (x.get("primary") or {}).get("upper"), False) for x in slices[:12]]
        chart = interval_chart([(lab, float(v), lo, hi, hl) for lab, v, lo, hi, hl in bars if v is not None],
                               title=f"{rep.get('primary_metric', 'metric')} by slice (95% CI)")
        if chart:
            s.add(Figure(chart, "The primary metric on each slice, worst first"))
    fair = rep.get("fairness") or {}
    if fair:
        frows = []
        for col, f in fair.items():
            if not isinstance(f, dict):
                continue
            for k, v in f.items():
                if k in ("column", "threshold", "groups"):
                    continue
                if isinstance(v, dict) and "value" in v:
                    frows.append([col, k, fmt(v.get("value")), f"[{fmt(v.get('lower'))}, {fmt(v.get('upper'))}]"])
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    frows.append([col, k, fmt(v), ""])
            groups = [g for g in f.get("groups") or [] if isinstance(g, dict)]
            if groups:
                frows.append([col, "groups (n: selection rate / TPR)",
                              "; ".join(f"{g.get('group')} ({fmt(g.get('n'))}: {fmt(g.get('selection_rate'), 2)} / "
                                        f"{fmt(g.get('tpr'), 2)})" for g in groups[:6]), ""])
        if frows:
            s.add(Table(["sensitive column", "measure", "value", "interval"], frows[:40],
                        caption=f"Fairness (decision threshold {fmt(spec.evaluation.fairness.threshold, 2)})"))
    verdicts = _gate_verdicts(facts)
    if verdicts:
        s.add(Table(["gate", "passed", "evidence"],
                    [[g.get("gate", ""), "PASS" if g.get("passed") else "FAIL", _evidence(g.get("evidence"))] for g in verdicts],
                    caption="Gates"))
    s.add(f"Verdict: {'APPROVED' if rep.get('approved') else 'NOT APPROVED'} "
          f"({sum(bool(g.get('passed')) for g in verdicts)} of {len(verdicts)} gates passed).")
    return s


def _oracle(facts: Facts) -> float | None:
    """Mean oracle ROC-AUC of the simulated days without drift (None for real data)."""
    days = [d for d in (facts.simulation or {}).get("days", []) if d.get("drift") in (None, "none")]
    vals = [float(d["oracle_auc"]) for d in days if isinstance(d.get("oracle_auc"), (int, float))]
    return sum(vals) / len(vals) if vals else None


def _evidence(ev: Any) -> str:
    if not isinstance(ev, dict):
        return str(ev or "")
    parts = []
    for k, v in list(ev.items())[:8]:
        if isinstance(v, dict):
            if "lower" in v and "upper" in v:
                parts.append(f"{k}=[{fmt(v.get('lower'))}, {fmt(v.get('upper'))}]")
            elif k == "columns":
                parts += [f"{c}={fmt(x.get('value'))} ({'pass' if x.get('passed') else 'FAIL'})"
                          for c, x in v.items() if isinstance(x, dict)]
            continue
        parts.append(f"{k}={fmt(v) if isinstance(v, (int, float)) else v}")
    return ", ".join(parts)


# -- 6. deployment -----------------------------------------------------------------------------
def deployment(spec: Spec, facts: Facts) -> Section:
    """Step 6: registry, serving plan and measured latency."""
    d = spec.deployment
    s = Section("deployment", "7. Deployment: registry and serving")
    s.add(Bullets([
        f"Serving mode: {d.mode}; bound to {d.host}:{d.port}; routing policy: {d.routing.type}.",
        "Endpoints: POST /v1/predict (one row or many), POST /v1/feedback, /health, /ready, /metrics (Prometheus).",
        f"Every prediction is logged to {facts.ws.root / 'logs' / 'predictions'} (Parquet segments) for monitoring.",
    ]))
    if facts.versions:
        s.add(Table(
            ["version", "state", "approved", "created", "bundle"],
            [[v["version_id"], v["state"], fmt(v["approved"]), str(v["created_at"])[:19], v["bundle_digest"][:12]] for v in facts.versions],
            caption="Model registry",
        ))
        prod = next((v for v in facts.versions if v["state"] == "production"), None)
        s.add(f"In production: {prod['version_id'] if prod else 'no version yet (promote with `loopml models promote`)'}.")
    else:
        s.add(_not_run("register", facts, "registered model versions"))
    board = _leaderboard(facts)
    s.add(_cloud_and_device(spec, board))
    win = _winner(board)
    lat = []
    if win and win.get("latency_p99_ms") is not None:
        lat.append(f"in-process single-row p99 of `{win.get('name')}`, the winner of the latest training, measured at "
                   f"selection: {fmt(win['latency_p99_ms'], 3)} ms")
    replay = (facts.extras.get("demo") or {}).get("replay") or {}
    if replay.get("p50_ms") is not None:
        lat.append(f"over HTTP during the replay: p50 {fmt(replay['p50_ms'], 2)} ms, p99 {fmt(replay['p99_ms'], 2)} ms per request of "
                   f"{fmt(replay.get('rows_per_request'))} rows, {fmt(replay.get('errors'))} errors")
    ops = _latest_ops(facts)
    if ops:
        lat.append(ops)
    s.add(Bullets(lat) if lat else Note("no latency measured yet (no training run and no service traffic recorded)."))
    rollout = (facts.extras.get("demo") or {}).get("rollout")
    if rollout:
        sh = rollout.get("shadow") or {}
        q = sh.get("quality") or {}
        s.add(Bullets([
            f"Rollout of {rollout['version_id']} (the retrained candidate): shadow on {fmt(sh.get('pairs'))} paired "
            f"requests, score correlation {fmt(sh.get('score_correlation'), 3)}"
            + (f", Brier difference {fmt(q.get('difference'), 5)} [{fmt(q.get('ci_low'), 5)}, {fmt(q.get('ci_high'), 5)}]"
               if q else ""),
            "Canary steps served: " + (", ".join(f"{x:.0%}" for x in rollout.get("steps_reached") or [])
                                       or "none"),
            f"Decision: {rollout['decision'].replace('_', ' ')} at the {rollout['stage']} stage: {rollout['reason']}",
        ]))
    return s


def _cloud_and_device(spec: Spec, board: dict[str, Any] | None) -> Any:
    """The cloud choice and the on-device choice side by side (``requirements.constraints.deployment_target``)."""
    target = spec.requirements.constraints.deployment_target
    if not board:
        return Note("no training run yet: the cloud and on-device choices are not measured.")
    sec = board.get("on_device")
    metric = board.get("metric", "metric")
    if not sec:
        win = _winner(board) or {}
        return Table(["", "cloud (chosen: deployment_target cloud)", "on-device"], [
            ["model", str(win.get("name")), "not measured (set deployment_target: on-device)"],
            [f"{metric} (validation)", f"{fmt(win.get('value'))} [{fmt(win.get('ci_low'))}, {fmt(win.get('ci_high'))}]", "-"],
            ["size", f"{fmt(win.get('size_mb'), 3)} MB (bundle)", "-"],
            ["p99 latency", f"{fmt(win.get('latency_p99_ms'), 3)} ms (Python, in-process)", "-"],
        ], caption="Deployment target: cloud and on-device")
    cloud, rows = sec["cloud"], {v["name"]: v for v in sec["variants"]}
    dev = rows.get(sec["winner"], {})
    cand: dict[str, Any] = next((c for c in board.get("candidates", []) if c.get("name") == cloud["name"]), {})
    budget = sec.get("budget") or {}

    def ci(v: dict[str, Any]) -> str:
        lo, hi = (v.get("interval") or [None, None])[:2]
        return f"{fmt(v.get('value'))} [{fmt(lo)}, {fmt(hi)}]"
    return Table(["", f"cloud: best model ({cloud['name']})", f"on-device (chosen: {target}): {sec['winner']}"], [
        ["technique", "export (float32)", str(dev.get("technique", "-"))],
        [f"{metric} on validation, ONNX Runtime [95% CI]", ci(cloud), ci(dev)],
        ["share of the cloud model's lift over the baseline", "100%", f"{fmt(dev.get('lift_share', 0) * 100, 1)}%"],
        ["ONNX file", f"{fmt(cloud['size_kb'], 1)} KB", f"{fmt(dev.get('size_kb'), 1)} KB "
                                                      f"(budget {budget.get('max_model_size_mb') or '–'} MB)"],
        ["single-row p99, ONNX Runtime 1 thread", f"{fmt(cloud['p99_ms'], 3)} ms",
         f"{fmt(dev.get('p99_ms'), 3)} ms (budget {budget.get('latency_p99_ms') or '–'} ms)"],
        ["Python bundle p99 (in-process)", f"{fmt(cand.get('latency_p99_ms'), 3)} ms", "-"],
    ], caption=f"Deployment target: cloud and on-device side by side. {sec['why']}")


def _latest_ops(facts: Facts) -> str | None:
    for chk in facts.checks:
        for w, m in (chk.get("metrics") or {}).items():
            if isinstance(m, dict) and m.get("ops.latency_p99_ms") is not None:
                return (f"service /metrics over the last {w}: p99 {fmt(m['ops.latency_p99_ms'], 2)} ms, "
                        f"error rate {fmt(m.get('ops.error_rate'))}")
    return None


# -- 7. monitoring -----------------------------------------------------------------------------
def monitoring(spec: Spec, facts: Facts) -> Section:
    """Step 7: drift settings, alert rules, latest status, alerts and retraining decisions."""
    m = spec.monitoring
    s = Section("monitoring", "8. Monitoring and the closed loop")
    s.add(f"Drift: {', '.join(m.drift.methods)} per feature over {m.drift.window} windows of the prediction log against the "
          f"training reference (PSI > {m.drift.psi_threshold} or effect ≥ {m.drift.min_effect} with p < {m.drift.p_value}).")
    if m.alerts:
        s.add(Table(["rule", "metric", "fires when", "window", "severity", "retrains"],
                    [[a.name, a.metric, f"{a.op} {a.threshold}", a.window, a.severity, fmt(a.retrain)] for a in m.alerts],
                    caption="Alert rules"))
    else:
        s.add("No alert rules declared.")
    if not facts.checks:
        s.add(Note("no monitoring cycle has run yet (`loopml monitor` evaluates the rules)."))
        return s
    last = facts.checks[0]
    s.add(f"Latest check {last.get('check_id')} at {str(last.get('started_at'))[:19]}: {last.get('status')}.")
    mrows = []
    for w, metrics in (last.get("metrics") or {}).items():
        if isinstance(metrics, dict):
            for k, v in metrics.items():
                if k.startswith(("drift.share", "drift.count", "drift.prediction", "quality.", "cbpe.", "ops.", "labels.", "volume")):
                    mrows.append([w, k, fmt(v)])
    if mrows:
        s.add(Table(["window", "signal", "value"], mrows[:30], caption="Signals of the latest check"))
    psi = []
    for metrics in (last.get("metrics") or {}).values():
        if isinstance(metrics, dict):
            psi += [(k[len("drift.feature."):-len(".psi")], float(v), None, None,
                     bool(metrics.get(k[:-len(".psi")] + ".drifted")))
                    for k, v in metrics.items()
                    if k.startswith("drift.feature.") and k.endswith(".psi") and isinstance(v, (int, float))]
    if psi:
        psi.sort(key=lambda r: -r[1])
        psi_chart = interval_chart(psi[:15], title="PSI per watched feature (drifted starred)")
        if psi_chart:
            s.add(Figure(psi_chart, "Population stability of each watched input in the latest window"))
    if facts.alerts:
        s.add(Table(["fired", "rule", "metric", "value", "threshold", "severity", "retrain"],
                    [[str(a["fired_at"])[:19], a["rule"], a["metric"], fmt(a["value"]), f"{a['op']} {a['threshold']}",
                      a["severity"], fmt(a["retrain"])] for a in facts.alerts[:15]], caption="Alerts"))
    if facts.decisions:
        s.add(Table(["decided", "action", "status", "new version", "why"],
                    [[str(d["decided_at"])[:19], d["action"], d["status"], d.get("version_id") or "–",
                      "; ".join(str(t.get("detail", t)) for t in (d.get("triggers") or []) if isinstance(t, dict))[:120]]
                     for d in facts.decisions[:10]], caption="Retraining decisions"))
    return s


SECTIONS = (requirements, framing, data, features, models, evaluation, deployment, monitoring)
