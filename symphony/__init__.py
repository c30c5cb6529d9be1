"""Symphony shared core: CLI, configuration, database access, embedded PostgreSQL."""

__version__ = "0.1.0"
