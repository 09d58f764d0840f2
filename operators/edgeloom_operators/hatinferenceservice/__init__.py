"""HatInferenceService: a cloud Deployment of middle-block replicas and one Deployment and
Service per device group, each device serving the OpenAI-compatible endpoint."""

from edgeloom_operators.hatinferenceservice.plugin import HatInferenceServicePlugin

__all__ = ["HatInferenceServicePlugin"]
