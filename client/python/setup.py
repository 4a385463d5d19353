"""Builds the convserve package, generating its gRPC stubs from proto/ (see generate_stubs.sh).

The generated modules go straight into the build tree, never into the source tree:
    python3 -m pip install --no-build-isolation client/python
"""

import os
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithStubs(build_py):
    """build_py that also runs protoc + grpc_python_plugin into the built package."""

    def run(self):
        super().run()
        subprocess.run([os.path.join(HERE, "generate_stubs.sh"), os.path.abspath(self.build_lib)],
                       check=True)


setup(cmdclass={"build_py": BuildPyWithStubs})
