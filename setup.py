"""Build hook: the journal's C core is compiled by cffi in API mode at install time.

Everything else about the distribution lives in pyproject.toml; setuptools only
needs this file because `cffi_modules` is not expressible there.
"""

from setuptools import setup

setup(cffi_modules=["journal/_build.py:ffibuilder"])
