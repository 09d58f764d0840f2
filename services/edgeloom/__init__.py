"""edgeloom: Kubernetes-native platform for edge-AI research systems."""

__version__ = "0.1.0"
