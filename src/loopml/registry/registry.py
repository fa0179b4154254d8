"""The model registry: versions with lineage and verdict, moved along the lifecycle state machine.

Examples
--------
>>> import tempfile
>>> from loopml.workspace import Workspace
>>> from loopml.registry import Registry
>>> ws = Workspace.open(tempfile.mkdtemp())
>>> digest = ws.put_artifact_bytes(b"{}", kind="bundle", name="bundle")
>>> reg = Registry(ws)
>>> v = reg.register(digest, verdict={"approved": True, "gates": []}, lineage={})
>>> v.version_id, v.state
('v1', 'candidate')
>>> reg.transition("v1", "production", actor="alice", reason="first model").state
'production'
>>> reg.production().version_id
'v1'
"""

from __future__ import annotations

import builtins
import datetime as dt
import getpass
import os
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from loopml.errors import GateFailed, LoopMLError, NotFound
from loopml.registry.lifecycle import SERVING_STATES, IllegalTransition, check_state, check_transition
from loopml.registry.tables import model_transitions, model_versions
from loopml.workspace import Workspace, utcnow


def default_actor() -> str:
    """Who is acting: ``$LOOPML_ACTOR`` or the login name."""
    env = os.environ.get("LOOPML_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return "unknown"


def _aware(ts: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything the registry stores is UTC.
    if ts is not None and ts.tzinfo is None:
        return ts.replace(tzinfo=dt.UTC)
    return ts


@dataclass(frozen=True)
class ModelVersion:
    """One registered model version (a read-only snapshot of its row)."""

    version_id: str
    number: int
    bundle_digest: str
    state: str
    approved: bool
    created_at: dt.datetime
    created_by: str
    verdict: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Any) -> ModelVersion:
        """Build from a ``model_versions`` row mapping."""
        return cls(
            version_id=row["version_id"],
            number=row["number"],
            bundle_digest=row["bundle_digest"],
            state=row["state"],
            approved=bool(row["approved"]),
            created_at=_aware(row["created_at"]) or utcnow(),
            created_by=row["created_by"],
            verdict=dict(row["verdict"] or {}),
            lineage=dict(row["lineage"] or {}),
            meta=dict(row["meta"] or {}),
        )

    def failed_gates(self) -> list[str]:
        """Names of the evaluation gates that did not pass."""
        return [str(g.get("gate")) for g in self.verdict.get("gates", []) if not g.get("passed", False)]


@dataclass(frozen=True)
class Transition:
    """One recorded lifecycle move: who, when, why."""

    transition_id: int
    version_id: str
    from_state: str | None
    to_state: str
    at: dt.datetime
    actor: str
    reason: str
    forced: bool


@dataclass(frozen=True)
class ServingPeriod:
    """A span of time during which one version was in production (``until`` is None while it still is)."""

    version_id: str
    since: dt.datetime
    until: dt.datetime | None

    def covers(self, at: dt.datetime) -> bool:
        """Whether this version was serving at ``at``."""
        return self.since <= at and (self.until is None or at < self.until)


class Registry:
    """Model versions of one workspace. Thin: state lives in the metadata database."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        # the workspace creates every table declared when it opened; make sure ours exist even
        # when this module was imported after that
        model_versions.metadata.create_all(ws.engine, tables=[model_versions, model_transitions])

    # -- reading -----------------------------------------------------------------------------
    def get(self, version_id: str) -> ModelVersion:
        """A version by id (``v3``) or number (``3``)."""
        vid = f"v{version_id}" if version_id.isdigit() else version_id
        with self.ws.engine.connect() as conn:
            row = conn.execute(select(model_versions).where(model_versions.c.version_id == vid)).mappings().first()
        if row is None:
            known = ", ".join(v.version_id for v in self.list()) or "none registered yet"
            raise NotFound(f"model version `{version_id}` not found (versions: {known})")
        return ModelVersion.from_row(row)

    def list(self, state: str | None = None) -> builtins.list[ModelVersion]:
        """All versions (optionally in one state), oldest first."""
        q = select(model_versions).order_by(model_versions.c.number)
        if state is not None:
            q = q.where(model_versions.c.state == check_state(state))
        with self.ws.engine.connect() as conn:
            return [ModelVersion.from_row(r) for r in conn.execute(q).mappings().all()]

    def production(self) -> ModelVersion | None:
        """The version in production, if any."""
        found = self.list("production")
        return found[-1] if found else None

    def by_bundle(self, bundle_digest: str) -> ModelVersion | None:
        """The version registered for a bundle digest, if any."""
        with self.ws.engine.connect() as conn:
            row = (
                conn.execute(select(model_versions).where(model_versions.c.bundle_digest == bundle_digest))
                .mappings()
                .first()
            )
        return None if row is None else ModelVersion.from_row(row)

    def history(self, version_id: str | None = None) -> builtins.list[Transition]:
        """Every recorded transition (of one version, or all), in the order they happened."""
        q = select(model_transitions).order_by(model_transitions.c.transition_id)
        if version_id is not None:
            q = q.where(model_transitions.c.version_id == self.get(version_id).version_id)
        with self.ws.engine.connect() as conn:
            return [
                Transition(
                    transition_id=r["transition_id"],
                    version_id=r["version_id"],
                    from_state=r["from_state"],
                    to_state=r["to_state"],
                    at=_aware(r["at"]) or utcnow(),
                    actor=r["actor"],
                    reason=r["reason"],
                    forced=bool(r["forced"]),
                )
                for r in conn.execute(q).mappings().all()
            ]

    def serving_periods(self) -> builtins.list[ServingPeriod]:
        """When each version was in production: answers "which version served when"."""
        periods: builtins.list[ServingPeriod] = []
        open_: dict[str, dt.datetime] = {}
        for t in self.history():
            if t.to_state == "production":
                open_[t.version_id] = t.at
            elif t.from_state == "production" and t.version_id in open_:
                periods.append(ServingPeriod(t.version_id, open_.pop(t.version_id), t.at))
        periods.extend(ServingPeriod(v, since, None) for v, since in open_.items())
        return sorted(periods, key=lambda p: p.since)

    def serving_at(self, at: dt.datetime) -> ModelVersion | None:
        """The version that was in production at time ``at`` (UTC if naive)."""
        at = _aware(at) or utcnow()
        for p in self.serving_periods():
            if p.covers(at):
                return self.get(p.version_id)
        return None

    # -- writing -----------------------------------------------------------------------------
    def register(
        self,
        bundle_digest: str,
        *,
        verdict: dict[str, Any],
        lineage: dict[str, Any],
        meta: dict[str, Any] | None = None,
        actor: str | None = None,
        reason: str = "registered",
    ) -> ModelVersion:
        """Register a bundle as a new candidate version (the same bundle twice gives the same version).

        Parameters
        ----------
        bundle_digest
            Digest of the bundle manifest artifact (it must exist in the artifact store).
        verdict
            The evaluation report's verdict: ``{"approved": bool, "gates": [{"gate", "passed", ...}]}``.
        lineage
            Where the model came from: data snapshot, feature set, training run, evaluation report.
        meta
            Small facts shown by ``loopml models list`` (task, model type, headline metrics).
        """
        if not self.ws.artifacts.exists(bundle_digest):
            raise NotFound(f"bundle `{bundle_digest[:12]}` is not in the artifact store; cannot register it")
        existing = self.by_bundle(bundle_digest)
        if existing is not None:
            return existing
        approved = bool(verdict.get("approved", False))
        who = actor or default_actor()
        now = utcnow()
        with self.ws.engine.begin() as conn:
            number = int(conn.execute(select(func.coalesce(func.max(model_versions.c.number), 0))).scalar_one()) + 1
            vid = f"v{number}"
            conn.execute(
                insert(model_versions).values(
                    version_id=vid,
                    number=number,
                    bundle_digest=bundle_digest,
                    state="candidate",
                    approved=approved,
                    verdict=verdict,
                    lineage=lineage,
                    meta=meta or {},
                    created_at=now,
                    created_by=who,
                )
            )
            self._record(conn, vid, None, "candidate", now, who, reason, False)
        return self.get(vid)

    def transition(
        self, version_id: str, to_state: str, *, actor: str | None = None, reason: str, force: bool = False,
        check_evidence: bool = True,
    ) -> ModelVersion:
        """Move a version along a declared transition, recording who, when and why.

        Entering ``production`` archives the version that was there. Entering a serving state
        (shadow, canary, production) with failed gates is refused unless ``force`` is set, and
        forcing needs a reason. So is entering production when the version's latest evaluation
        found it significantly worse than production (:func:`loopml.registry.evidence.check_promotion`;
        ``check_evidence=False`` for a rollback).
        """
        if not reason.strip():
            raise LoopMLError(f"moving {version_id} to {to_state} needs a reason (who reads the history will ask)")
        v = self.get(version_id)
        check_state(to_state)
        if v.state == to_state:
            raise IllegalTransition(f"model version {v.version_id} is already in {to_state}")
        check_transition(v.version_id, v.state, to_state)
        if to_state in SERVING_STATES and not v.approved and not force:
            failed = v.failed_gates()
            raise GateFailed(
                f"model version {v.version_id} did not pass its evaluation gates"
                + (f" ({', '.join(failed)})" if failed else " (not approved)")
                + f"; refusing to move it to {to_state}",
                hint="pass --force with a --reason to override; the override is recorded",
            )
        overridden = None
        if check_evidence:
            from loopml.registry.evidence import check_promotion, comparison_text

            overridden = check_promotion(self, v.version_id, to_state, force=force)
            if overridden is not None:
                reason = f"{reason} [forced although {comparison_text(overridden)}]"
        who = actor or default_actor()
        now = utcnow()
        forced = (force and not v.approved and to_state in SERVING_STATES) or overridden is not None
        with self.ws.engine.begin() as conn:
            # re-read under the write transaction: another process may have moved it meanwhile
            current = conn.execute(
                select(model_versions.c.state).where(model_versions.c.version_id == v.version_id)
            ).scalar_one()
            check_transition(v.version_id, current, to_state)
            if to_state == "production":
                for (old,) in conn.execute(
                    select(model_versions.c.version_id).where(model_versions.c.state == "production")
                ).all():
                    self._set_state(conn, old, "production", "archived", now, who, f"replaced by {v.version_id}: {reason}")
            self._set_state(conn, v.version_id, current, to_state, now, who, reason, forced)
        return self.get(v.version_id)

    def promote(self, version_id: str, *, actor: str | None = None, reason: str, force: bool = False) -> ModelVersion:
        """Put a version in production (archiving the previous one)."""
        return self.transition(version_id, "production", actor=actor, reason=reason, force=force)

    def rollback(self, *, actor: str | None = None, reason: str) -> ModelVersion:
        """Archive the production version and restore the one that served before it."""
        current = self.production()
        if current is None:
            raise NotFound("no version is in production; nothing to roll back")
        previous = [p for p in self.serving_periods() if p.version_id != current.version_id and p.until is not None]
        if not previous:
            raise NotFound(f"{current.version_id} is the first version to serve; there is nothing to roll back to")
        target = self.get(previous[-1].version_id)
        if target.state != "archived":
            raise IllegalTransition(
                f"cannot roll back to {target.version_id}: it is in {target.state}, expected archived"
            )
        return self.transition(
            target.version_id, "production", actor=actor, reason=f"rollback from {current.version_id}: {reason}",
            force=True, check_evidence=False,
        )

    # -- internals ---------------------------------------------------------------------------
    def _set_state(
        self, conn: Connection, vid: str, from_state: str, to_state: str, at: dt.datetime, actor: str, reason: str,
        forced: bool = False,
    ) -> None:
        conn.execute(update(model_versions).where(model_versions.c.version_id == vid).values(state=to_state))
        self._record(conn, vid, from_state, to_state, at, actor, reason, forced)

    @staticmethod
    def _record(
        conn: Connection, vid: str, from_state: str | None, to_state: str, at: dt.datetime, actor: str, reason: str,
        forced: bool,
    ) -> None:
        conn.execute(
            insert(model_transitions).values(
                version_id=vid, from_state=from_state, to_state=to_state, at=at, actor=actor, reason=reason,
                forced=forced,
            )
        )
