"""Build hook: the journal's C core is compiled by cffi in API mode at install time.

Everything else about the distribution lives in pyproject.toml; setuptools only
needs this file because `cffi_modules` is not expressible there.
"""

from pathlib import Path

from setuptools import setup

# TEMPORARY while the journal core is being written: build it once it exists.
_BUILD = Path(__file__).parent / "journal" / "_build.py"
setup(cffi_modules=["journal/_build.py:ffibuilder"] if _BUILD.exists() else [])
