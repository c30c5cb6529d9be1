"""Subcommands of the shared core (migrate, db)."""
