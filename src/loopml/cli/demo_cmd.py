"""`loopml simulate`, `loopml import-kdd`, `loopml demo` and `loopml report`: the reference system and its design document."""

from __future__ import annotations

from pathlib import Path

import typer

from loopml.cli.shapes import emit, json_help
from loopml.cli.ui import console, table


def simulate_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder receiving impressions/, clicks/, truth/ and simulation.json."),
    days: int = typer.Option(7, "--days", "-d", min=1, help="Number of days to simulate."),
    start_day: int = typer.Option(0, "--start-day", min=0, help="Index of the first day (0 = the start date)."),
    impressions: int = typer.Option(40_000, "--impressions-per-day", min=1, help="Mean impressions per day."),
    drift: str = typer.Option(
        "none", "--drift", help="Drift applied from --drift-from on: none, new_ads, user_shift or seasonal."
    ),
    drift_from: int | None = typer.Option(
        None, "--drift-from", help="First drifted day index (default: the last simulated day)."
    ),
    strength: float = typer.Option(1.0, "--strength", min=0.0, help="Drift magnitude (1.0 = the documented default)."),
    market_scale: float = typer.Option(
        1.0, "--market-scale", min=0.0001, help="Multiply every catalogue size (smaller market = more repeat users/ads)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the market and the traffic."),
    fmt: str = typer.Option("parquet", "--format", help="Log file format: parquet or csv."),
    compare_to: Path | None = typer.Option(
        None, "--compare-to",
        help="A real impression log (CSV/Parquet with click, depth, position and id columns, e.g. the KDD Cup 2012 "
        "sample): also simulate the same number of rows and print the calibration figures side by side.",
    ),
) -> None:
    """Simulate days of search-ad traffic (impressions, clicks, true click probabilities) as event logs.

    The market and the click model are calibrated on the KDD Cup 2012 sample; see
    `loopml.simulator.calibration`.

    Examples:

      loopml simulate -o traffic --days 7
      loopml simulate -o traffic --days 3 --start-day 7 --drift new_ads --format csv
    """
    from loopml.errors import SpecError
    from loopml.simulator import DRIFTS, SimulatorConfig, TrafficSimulator, simulate

    if drift not in DRIFTS:
        raise SpecError(f"--drift `{drift}` is not a drift kind (available: {', '.join(sorted(DRIFTS))})")
    if fmt not in ("parquet", "csv"):
        raise SpecError(f"--format `{fmt}` is not supported (expected parquet or csv)")
    cfg = SimulatorConfig(seed=seed, impressions_per_day=impressions)
    if market_scale != 1.0:
        cfg = cfg.scaled(market_scale)
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("calibrating the click model", total=days)
        sim = TrafficSimulator(cfg)
        progress.update(task, description="simulating days")
        stats = simulate(
            out, days, simulator=sim, start_day=start_day, drift=drift, drift_from=drift_from, strength=strength,
            fmt=fmt,  # type: ignore[arg-type]
            on_day=lambda _d: progress.advance(task),
        )
    if compare_to is not None:
        _print_calibration(compare_to, cfg)
    console.print(
        table(
            f"simulated traffic in {out}",
            ["day", "date", "drift", "impressions", "clicks", "CTR", "oracle AUC", "late clicks"],
            [
                (s["day_index"], s["date"], s["drift"], f"{s['impressions']:,}", f"{s['clicks']:,}",
                 f"{s['ctr']:.4f}", f"{s['oracle_auc']:.4f}", s["clicks_later_than_10min"])
                for s in stats
            ],
        )
    )


def _print_calibration(real_path: Path, cfg: object) -> None:
    """Real vs simulated calibration figures at the real log's volume."""
    from loopml.simulator import SimulatorConfig, TrafficSimulator, measure_marginals

    real = measure_marginals(real_path)
    base = cfg if isinstance(cfg, SimulatorConfig) else SimulatorConfig()
    day = TrafficSimulator(base.model_copy(update={"impressions_per_day": real.rows})).day(0)
    sim = measure_marginals(day.impressions.append_column("click", day.truth["clicked"]))
    rows: list[tuple[str, str, str]] = [("rows", f"{real.rows:,}", f"{sim.rows:,}"), ("CTR", f"{real.ctr:.4f}", f"{sim.ctr:.4f}")]
    rows += [(f"CTR depth,position {k}", f"{v:.4f}", f"{sim.ctr_by_cell.get(k, float('nan')):.4f}")
             for k, v in real.ctr_by_cell.items()]
    rows += [(f"share of depth {k}", f"{v:.4f}", f"{sim.share_by_depth.get(k, float('nan')):.4f}")
             for k, v in real.share_by_depth.items()]
    rows += [("anonymous share", f"{real.anonymous_share:.4f}", f"{sim.anonymous_share:.4f}"),
             ("anonymous CTR", f"{real.anonymous_ctr:.4f}", f"{sim.anonymous_ctr:.4f}")]
    rows += [(f"distinct {k}", f"{v:,}", f"{sim.distinct.get(k, 0):,}") for k, v in real.distinct.items()]
    rows += [(f"most frequent {k}", f"{v:,}", f"{sim.top_count.get(k, 0):,}") for k, v in real.top_count.items()]
    console.print(table(f"calibration: {real_path.name} vs the simulator at the same volume", ["figure", "real", "simulated"], rows))


def import_kdd_cmd(
    path: Path = typer.Argument(
        ..., help="The KDD Cup 2012 click log: CSV as shipped (Click_prediction_small.csv), TSV or Parquet with the "
        "columns click, ad_id, advertiser_id, depth, position, query_id, keyword_id, user_id (impression optional), "
        "or the competition's headerless training.txt.",
    ),
    out: Path = typer.Option(
        Path("data"), "--out", "-o", help="Folder receiving impressions/, clicks/ and import.json (the ad_clicks "
        "template reads data/ of its project).",
    ),
    days: int = typer.Option(7, "--days", "-d", min=1, max=365, help="Days the rows are spread over, in file order."),
    rows: int | None = typer.Option(None, "--rows", min=1, help="Read at most this many rows (default: all)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the jitter inside a day and of the click delays."),
    fmt: str = typer.Option("parquet", "--format", help="Log file format: parquet or csv."),
) -> None:
    """Import the real KDD Cup 2012 click log as impression and click event logs (the simulator's shape).

    The log has no timestamps: its rows are spread over --days days in file order, so a time split
    of the result is in effect a random split. Device and match type, which the log lacks, are the
    category `unknown`; a row with a click becomes a click event within the 600 s label window.
    Then `loopml run` on the ad_clicks template (`loopml init DIR --example ad_clicks`) runs on it:

        loopml import-kdd Click_prediction_small.csv --out DIR/data && loopml run -p DIR

    Examples:

      loopml import-kdd Click_prediction_small.csv -o data --days 7
      loopml import-kdd clicks.parquet -o data --rows 100000
    """
    from loopml.errors import SpecError
    from loopml.simulator import import_kdd

    if fmt not in ("parquet", "csv"):
        raise SpecError(f"--format `{fmt}` is not supported (expected parquet or csv)")
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("writing days", total=days)
        res = import_kdd(path, out, days=days, rows=rows, seed=seed, fmt=fmt,  # type: ignore[arg-type]
                         on_day=lambda _d: progress.advance(task))
    console.print(
        table(
            f"{res.log.rows:,} rows of {path.name}{' (capped)' if res.log.capped else ''} imported into {out}",
            ["day", "date", "file rows", "impressions", "clicks", "CTR"],
            [(s["day_index"], s["date"], f"{s['first_row']:,}-{s['last_row']:,}", f"{s['impressions']:,}",
              f"{s['clicks']:,}", f"{s['ctr']:.4f}") for s in res.written],
        )
    )
    console.print(f"wrote {res.manifest} (source sha256, the import's assumptions, every day's figures)")


def report_cmd(
    project: Path = typer.Option(Path("."), "--project", "-p", help="Project folder."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for design.md and design.html (default: .loopml/reports)."
    ),
    as_json: bool = typer.Option(False, "--json", help=json_help("report")),
) -> None:
    """Write the system design document of the project as built (Markdown + self-contained HTML).

    The seven steps are filled from the spec and from measured results in the workspace; a step
    whose stage has not run says so.

    Examples:

      loopml report -p shop                  # .loopml/reports/design.md and .html
      loopml report -p shop -o docs/
    """
    from loopml.reporting import build_design, write_design
    from loopml.workspace import Workspace

    ws = Workspace.open(project)
    md, page = write_design(ws, out)
    doc = build_design(ws)
    gaps = [s.title for s in doc.sections if any(type(b).__name__ == "Note" for b in s.blocks)]
    if as_json:
        emit("report", {"markdown": str(md), "html": str(page), "not_measured": gaps})
        return
    console.print(table("design document", ["", ""], doc.glance))
    if gaps:
        console.print(f"not measured yet: {', '.join(gaps)}")
    console.print(f"wrote {md}\nwrote {page}")


def demo_cmd(
    project: Path = typer.Option(Path("loopml-demo"), "--project", "-p", help="Project folder the demo creates and works in."),
    days: int = typer.Option(
        7, "--days", min=2, max=60,
        help="Days of normal traffic simulated before training (with --data: the days the log is spread over before "
        "the held-out day).",
    ),
    impressions: int = typer.Option(15_000, "--impressions-per-day", min=500, help="Mean impressions per simulated day."),
    market_scale: float = typer.Option(
        0.02, "--market-scale", help="Catalogue sizes relative to the KDD-calibrated market (smaller: users and ads recur)."
    ),
    drift: str = typer.Option("user_shift", "--drift", help="Drift of the replayed day: new_ads, user_shift or seasonal."),
    strength: float = typer.Option(1.0, "--strength", min=0.0, help="Drift magnitude (1.0 = the documented default)."),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the simulated market and traffic (with --data: of the in-day jitter and click delays)."
    ),
    port: int | None = typer.Option(None, "--port", help="Service port (default: the spec's 8700 if free, else any)."),
    replay_batch: int = typer.Option(250, "--replay-batch", min=1, help="Impressions per prediction request in the replay."),
    no_serve: bool = typer.Option(False, "--no-serve", help="Stop the service and exit when the loop is done."),
    keep: bool = typer.Option(False, "--keep", help="Reuse an existing demo project instead of starting fresh."),
    no_rollout: bool = typer.Option(
        False, "--no-rollout", help="Leave the retrained candidate registered for review instead of rolling it out "
        "(shadow, then a canary gated by the server; promoted or rolled back by the evidence)."),
    data: Path | None = typer.Option(
        None, "--data",
        help="Run on a real KDD Cup 2012 click log (CSV as shipped, TSV, Parquet or the competition's training.txt; "
        "e.g. the kdd2012_click_small dataset's Click_prediction_small.csv) instead of simulated traffic: it is "
        "spread over --days days plus one held-out day, which is replayed through the service (no synthetic "
        "drift; --impressions-per-day, --market-scale, --drift and --strength are not used).",
    ),
    rows: int | None = typer.Option(None, "--rows", min=1, help="With --data: read at most this many rows (default: all)."),
) -> None:
    """Run the reference system end to end: ad click prediction on simulated traffic (or a real log with --data).

    Simulates a week of search-ad traffic, ingests it with natural labels (a click within 10
    minutes) and hashed user ids, validates it, builds features (ids, user and ad click-rate
    history from the feature store), trains five candidates, evaluates them with gates, registers
    and serves the winner, replays a drifted day through the service, raises the drift alert,
    retrains and registers the approved candidate, rolls it out (shadow, then a canary gated by the
    server) and promotes or rolls it back by the evidence, and writes the design document. Keeps serving
    until Ctrl-C unless --no-serve.

    With --data the same spec runs on the real KDD Cup 2012 click log: its last day is held out
    and replayed; the drift alert and retraining happen only if monitoring finds drift.

    Examples:

      loopml demo                              # simulate, train, serve, drift, retrain
      loopml demo --drift new_ads --no-serve   # exit when the loop is done
      loopml demo --no-rollout                 # leave the retrained candidate for review
      loopml demo --data Click_prediction_small.csv --rows 200000
    """
    from loopml.demo import DemoSettings, run_demo, serve_forever
    from loopml.errors import SpecError
    from loopml.simulator import DRIFTS

    if rows is not None and data is None:
        raise typer.BadParameter("--rows caps the rows read from --data; pass --data FILE with it", param_hint="--rows")
    if drift not in DRIFTS or drift == "none":
        raise SpecError(f"--drift `{drift}` is not a drift kind (available: {', '.join(sorted(set(DRIFTS) - {'none'}))})")
    settings = DemoSettings(
        project=project, days=days, impressions_per_day=impressions, market_scale=market_scale, drift=drift,
        strength=strength, seed=seed, serve=not no_serve, port=port, replay_batch=replay_batch, fresh=not keep,
        data=data, rows=rows, rollout=not no_rollout,
    )
    result = run_demo(settings, console)
    serve_forever(result, console)


def register(app: typer.Typer) -> None:
    """Add `simulate`, `import-kdd`, `demo` and `report` to the root command."""
    app.command("demo")(demo_cmd)
    app.command("simulate")(simulate_cmd)
    app.command("import-kdd")(import_kdd_cmd)
    app.command("report")(report_cmd)
