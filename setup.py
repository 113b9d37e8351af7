"""Build hook: a wheel carries the chart library, installed by npm from the lock file.

Everything else about the package is in pyproject.toml.
"""

import shutil
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

FRONTEND = Path(__file__).resolve().parent / "frontend"
CHART_LIBRARY = FRONTEND / "node_modules" / "uplot" / "dist" / "uPlot.iife.min.js"


class BuildWithFrontend(build_py):
    """`build_py` that first runs `npm ci` in frontend/ when the chart library is missing."""

    def run(self) -> None:
        if not CHART_LIBRARY.is_file():
            npm = shutil.which("npm")
            if npm is None:
                raise SystemExit(
                    "Building ldam needs npm, to install the chart library from "
                    "frontend/package-lock.json; install Node.js with npm and build again."
                )
            subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=FRONTEND,
                check=True,
            )
        super().run()


setup(cmdclass={"build_py": BuildWithFrontend})
