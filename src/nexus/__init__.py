"""NEXUS: a self-hostable, emotion-aware, self-optimising sales-funnel platform."""

__version__ = "0.1.0"
