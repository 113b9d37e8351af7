"""The dashboard page (HTML, scripts, styles), shipped inside the package as ``ldam.frontend``.

No Python here: this file only lets `importlib.resources` find the page, and the chart library
that npm installs from the lock file, in a source checkout and in an installed wheel alike.
"""
