"""Powertools logger, tracer and metrics, defined once and imported by both functions.

Logs never carry PHI: UIDs, counts and reasons only, never names, IDs or dates.
"""

import warnings

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace="DicomIndex")

# A route that records no metric is normal; Powertools would warn on every such request.
warnings.filterwarnings("ignore", message="No application metrics to publish")
