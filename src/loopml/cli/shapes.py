"""The documented shapes of ``--json`` outputs: the top-level keys each command prints.

Every ``--json`` prints exactly one JSON object on stdout (progress and notes go to stderr); the
keys below are always present (``null`` when they do not apply). Lists of records keep the keys
named in :data:`RECORD_KEYS`. The help of each ``--json`` option quotes its line here, and a test
parses every output and checks these keys.
"""

from __future__ import annotations

import json
import sys
from typing import Any

JSON_KEYS: dict[str, tuple[str, ...]] = {
    "run": ("run_id", "status", "winner", "approved", "verdict", "version", "state", "promoted", "primary_metric",
            "baseline", "reasons", "reports"),
    "train": ("run_id", "status", "winner", "bundle", "primary_metric", "leaderboard", "reports"),
    "runs": ("runs", "executions"),
    "models list": ("versions",),
    "models history": ("periods", "transitions"),
    "lineage": ("artifact", "steps"),
    "spec check": ("ok", "spec", "task", "target", "sources", "candidates", "gates", "data_checked", "rows",
                   "columns", "notes", "warnings", "problems"),
    "monitor drift": ("window", "n_current", "n_reference", "drifted", "features", "notes"),
    "monitor ops": ("window", "summary", "by_version"),
    "monitor history": ("decisions", "alerts", "checks"),
    "zoo": ("models",),
    "init": ("spec", "template", "task", "target", "inputs", "ids", "timestamps"),
    "models promote": ("version_id", "state", "archived", "forced"),
    "models rollback": ("version_id", "state", "archived"),
    "monitor quality": ("task", "metric", "windows"),
    "monitor report": ("html", "json"),
    "data infer-schema": ("schema", "profile", "snapshot", "columns"),
    "features lookup": ("table", "rows"),
    "features materialize": ("tables",),
    "report": ("markdown", "html", "not_measured"),
    "predict": ("model_version", "rows", "seconds", "rows_per_second", "output", "online_rows"),
}

RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "runs.runs": ("run_id", "status", "started_at", "ended_at", "command", "error"),
    "runs.executions": ("execution_id", "run_id", "stage", "status", "config_hash", "code_version", "duration_s",
                        "outputs", "peak_rss_mb", "memory_cap_mb"),
    "models list.versions": ("version_id", "state", "approved", "failed_gates", "created_at", "created_by", "model",
                             "primary_metric", "bundle"),
    "lineage.steps": ("depth", "digest", "name", "kind", "stage", "execution_id", "status", "config_hash",
                      "code_version", "ended_at"),
}


def json_help(command: str) -> str:
    """The help text of a command's ``--json`` option, naming its keys."""
    keys = ", ".join(JSON_KEYS[command])
    return f"Print one JSON object on stdout (progress to stderr) with the keys: {keys}."


def emit(command: str, obj: dict[str, Any]) -> None:
    """Print ``obj`` as the command's JSON output, after checking it has the documented keys."""
    missing = [k for k in JSON_KEYS[command] if k not in obj]
    if missing:  # a programming error, not a user one: the documented shape is a contract
        raise RuntimeError(f"`{command} --json` output lacks its documented keys {missing}")
    sys.stdout.write(json.dumps(obj, indent=1, default=str) + "\n")
    sys.stdout.flush()
