# The cffi extensions cannot be declared in pyproject.toml: setuptools only takes
# `cffi_modules` as a setup() keyword. Everything else lives in pyproject.toml.
#
# The core module links no OpenSSL and is built for the limited API, so one cp39-abi3
# wheel serves every CPython from 3.9. The linked test module (sesscache.testing's
# endpoints, see _cffi_src/testing_api.py) is built only with SESSCACHE_BUILD_TESTING=1:
# development installs (the Makefile) and the OpenSSL matrix ask for it; wheels and
# plain `pip install sesscache` from the sdist never carry it.
import os

from setuptools import setup

CFFI_MODULES = ["build_ffi.py:ffibuilder"]
if os.environ.get("SESSCACHE_BUILD_TESTING") == "1":
    CFFI_MODULES.append("build_ffi.py:testing_ffibuilder")

setup(
    cffi_modules=CFFI_MODULES,
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
