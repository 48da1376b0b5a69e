# The cffi extension cannot be declared in pyproject.toml: setuptools only takes
# `cffi_modules` as a setup() keyword. Everything else lives in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
