"""Symphony shared core: configuration, database access and migrations, embedded PostgreSQL, formats.

The core imports only the journal; the daemons import the core; the
application layer (`symphony.app`: CLI dispatch, `up`, demo, chaos) imports
the daemons. See tests/test_house.py for the rules as a test.
"""

__version__ = "0.1.0"
