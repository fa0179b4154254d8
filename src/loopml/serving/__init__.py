"""Serving: batch prediction and the online prediction service.

Public surface::

    Servable                 a loaded model version (schema + transform + fast predictor)
    ServingApp, run_server   the service (lean HTTP on uvloop + httptools)
    app_for_workspace        the service of a project (registry versions, logs, online store)
    predict_batch            chunked batch scoring to Parquet and the online store
    RoutingPolicy, ROUTING_POLICIES, register_policy   pluggable routing
    Journal, JournalWriter, wait_written    the service's log: journal + writer process -> Parquet
    SegmentLog, prediction_log_dir, feedback_log_dir   the segments monitoring reads (in-process log)
"""

from loopml.serving.app import ServingApp, ServingState
from loopml.serving.batch import BatchResult, predict_batch
from loopml.serving.journal import Journal, JournalWriter, wait_written
from loopml.serving.logs import SegmentLog, feedback_log_dir, prediction_log_dir
from loopml.serving.routing import ROUTING_POLICIES, ProductionPolicy, Route, RoutingPolicy, register_policy
from loopml.serving.schema import InputSchema, RequestInvalid
from loopml.serving.servable import Servable
from loopml.serving.service import app_for_model_file, app_for_workspace, run_server

__all__ = [
    "ROUTING_POLICIES",
    "BatchResult",
    "InputSchema",
    "Journal",
    "JournalWriter",
    "ProductionPolicy",
    "RequestInvalid",
    "Route",
    "RoutingPolicy",
    "SegmentLog",
    "Servable",
    "ServingApp",
    "ServingState",
    "app_for_model_file",
    "app_for_workspace",
    "feedback_log_dir",
    "predict_batch",
    "prediction_log_dir",
    "register_policy",
    "run_server",
    "wait_written",
]
