"""pi-sidecar: a credential-holding auth gateway for LLM agents (pi-native protocol)."""

__version__ = "0.1.0"
