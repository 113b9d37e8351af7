"""ldam: Langevin Dynamics Activation Maximization, streamed live to the browser.

The import package maps the repository's folders: ``ldam.sampling`` (the sampler side, torch),
``ldam.worker`` (the worker process), ``ldam.wire`` (what both processes share, no torch),
``ldam.web`` (the web server, no torch), ``ldam.cli`` (the ``ldam`` command) and
``ldam.models`` (networks, checkpoint loading, data, the bundled checkpoints). Importing
``ldam`` itself imports no torch, so the web server's process stays torch-free.
"""

__version__ = "0.1.0"
