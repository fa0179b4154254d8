"""Step 2 of the design: framing the problem as an ML task."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from loopml.spec.base import StrictModel

TaskType = Literal["binary", "multiclass", "regression", "ranking"]


class Task(StrictModel):
    """The ML framing: task type, target, keys, time, and what it stands for online."""

    type: TaskType = Field(default="binary", description="binary, multiclass, regression or ranking.")
    target: str = Field(default="label", description="Column holding the label.")
    entity_keys: list[str] = Field(
        default_factory=list, description="Keys of the entities predictions are about (e.g. user_id)."
    )
    item_key: str | None = Field(default=None, description="Item key for ranking and recommendation.")
    group_key: str | None = Field(
        default=None, description="Column grouping rows into one ranked list (query or user) for ranking."
    )
    timestamp: str | None = Field(default=None, description="Event-time column of each example.")
    objective: str = Field(default="", description="The ML objective in words (e.g. predict P(click)).")
    online_metric: str | None = Field(default=None, description="The online metric the model serves (e.g. CTR).")
    positive_label: str | int | None = Field(
        default=None, description="For binary tasks with non 0/1 labels: the value counted as positive."
    )
