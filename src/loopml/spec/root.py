"""The root of ``loopml.yaml``: the seven steps of an ML system design."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel
from loopml.spec.data import Data
from loopml.spec.deployment import Deployment
from loopml.spec.evaluation import Evaluation
from loopml.spec.features import Features
from loopml.spec.monitoring import Monitoring
from loopml.spec.requirements import Requirements
from loopml.spec.task import Task
from loopml.spec.training import Training

SPEC_VERSION = 1


class Project(StrictModel):
    """Identity of the project."""

    name: str = Field(default="loopml-project", description="Project name.")
    description: str = Field(default="", description="One paragraph on what the system is for.")


class WorkspaceSettings(StrictModel):
    """Where the workspace keeps its metadata and files."""

    path: str = Field(default=".loopml", description="Workspace folder, relative to the project folder.")
    metadata_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the metadata database; SQLite inside the workspace when unset "
        "(e.g. postgresql+psycopg://user@127.0.0.1/loopml).",
    )


class Spec(StrictModel):
    """A loopml project: one spec drives the whole loop."""

    spec_version: Literal[1] = Field(default=1, description="Version of the spec format.")
    project: Project = Field(default_factory=Project, description="Project identity.")
    workspace: WorkspaceSettings = Field(default_factory=WorkspaceSettings, description="Workspace settings.")
    requirements: Requirements = Field(default_factory=Requirements, description="Step 1: requirements.")
    task: Task = Field(default_factory=Task, description="Step 2: the ML framing.")
    data: Data = Field(default_factory=Data, description="Step 3: data collection and verification.")
    features: Features = Field(default_factory=Features, description="Step 4: features and the feature store.")
    training: Training = Field(default_factory=Training, description="Step 5a: model development.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Step 5b: evaluation and gates.")
    deployment: Deployment = Field(default_factory=Deployment, description="Step 6: deployment.")
    monitoring: Monitoring = Field(default_factory=Monitoring, description="Step 7: monitoring and retraining.")
