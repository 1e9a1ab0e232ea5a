"""OpenTelemetry for the toolkit: the name registry, provider setup and the HTTP middleware."""

from toolkit.telemetry.middleware import TelemetryMiddleware
from toolkit.telemetry.setup import Telemetry, setup_telemetry

__all__ = ["Telemetry", "TelemetryMiddleware", "setup_telemetry"]
