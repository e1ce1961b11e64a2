"""Register a partner's customer sheet in the Volue Spark Energy Coordination API."""

__version__ = "0.1.0"
