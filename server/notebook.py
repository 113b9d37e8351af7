"""The dashboard from a notebook: ``ldam.notebook.show(checkpoint_or_dir, **options)``.

    import ldam.notebook
    ldam.notebook.show("runs/mnist")            # a folder: follow the run (ldam serve --watch)
    ldam.notebook.show("model.pt2", target="fc3:0-9", port=8010)
    ldam.notebook.stop()

`show` starts ``ldam serve`` in a background process (its own session, so interrupting a cell
does not stop it), waits until it serves, and shows the page in an IFrame when it runs inside a
Jupyter kernel (IPython's display); anywhere else it prints the address. A second `show` with
the same file and options reuses the running server; other options replace it. The server is
stopped by `stop`, and when the interpreter exits.

The security rules are those of ``ldam serve``: the default bind is loopback with no token; any
other `host` gets a token (the one given, else a fresh one), which travels to the server in its
environment, never on its command line, and to the page in the login link's fragment. No torch
here: the server process does the work.
"""

from __future__ import annotations

import atexit
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ldam.errors import UserError
from ldam.metadata import parse_metadata
from ldam.web import security

# ``show``'s options and the ``ldam serve`` flag each one becomes (True: a flag without value).
OPTIONS = {
    "compare": "--compare",
    "target": "--target",
    "data": "--data",
    "checkpoints": "--checkpoints",
    "host": "--host",
    "port": "--port",
    "device": "--device",
    "token": None,  # passed in the environment (LDAM_TOKEN), never on the command line
    "trust_checkpoint": "--trust-checkpoint",
    "arch": "--arch",
    "input_shape": "--input-shape",
    "idle_pause": "--idle-pause",
    "watch_settle": "--watch-settle",
    "atlas": "--atlas",
    "mean": "--mean",
    "std": "--std",
    "class_names": "--class-names",
    "view": "--view",
}
# Starting imports torch in the worker and loads the model: allow a slow machine its time.
START_TIMEOUT_S = 180.0
# Lines of the server's output kept for `Dashboard.output` and error messages.
OUTPUT_LINES = 200


class NotebookError(UserError):
    """The dashboard cannot be shown; the message is one sentence."""


@dataclass
class Dashboard:
    """A running ``ldam serve`` started by `show`.

    `url` is the address to open (the login link, with the token in its fragment, when the
    server needs a token), `page` the dashboard's own address, `process` the server.
    """

    url: str
    page: str
    port: int
    process: subprocess.Popen[bytes]
    key: tuple[Any, ...]
    lines: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=OUTPUT_LINES)
    )

    def running(self) -> bool:
        """True while the server process runs."""
        return self.process.poll() is None

    def output(self) -> str:
        """The server's newest output lines (stdout and stderr)."""
        return "".join(self.lines)

    def __repr__(self) -> str:
        return f"Dashboard(url={self.url!r}, pid={self.process.pid})"


_current: Dashboard | None = None
# Class-name lists written for ``--class-names`` (`_names_file`): text -> file.
_names_files: dict[str, Path] = {}
_lock = threading.Lock()


def _flag_value(name: str, value: Any) -> str:
    if name == "input_shape" and isinstance(value, (tuple, list)):
        return ",".join(str(int(v)) for v in value)
    if name in ("mean", "std") and isinstance(value, (tuple, list)):
        return ",".join(repr(float(v)) for v in value)
    if name == "class_names" and not isinstance(value, (str, os.PathLike)):
        return str(_names_file(value))
    return str(value)


def _names_file(names: Any) -> Path:
    """A list of class names as a file of one name per line (names may hold commas); the same
    names give the same file for as long as this interpreter runs, hence the same ``ldam
    serve`` arguments (and reuse). A private ``mkstemp`` file: never a name in the shared
    temporary folder that another user could have made first."""
    text = "".join(f"{name}\n" for name in names)
    path = _names_files.get(text)
    if path is None or not path.is_file():
        fd, name = tempfile.mkstemp(prefix="ldam-class-names-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        path = _names_files[text] = Path(name)
    return path


def _remove_names_files() -> None:
    # The server read its names when it started; the files are not needed after this process.
    for path in _names_files.values():
        path.unlink(missing_ok=True)


def serve_arguments(path: str | os.PathLike[str], options: dict[str, Any]) -> list[str]:
    """The ``ldam serve`` arguments for `path` (a folder: ``--watch``) and `options` (see
    `OPTIONS`); a `NotebookError` names an unknown option or a missing path."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise NotebookError(
            f"show() has no option {unknown[0]!r}; use one of: {', '.join(sorted(OPTIONS))}."
        )
    try:  # the server would refuse them too, but only after it started
        parse_metadata(
            options.get("mean"),
            options.get("std"),
            options.get("class_names"),
            flags=("mean", "std", "class_names"),
        )
    except UserError as err:
        raise NotebookError(str(err), err.field) from None
    target = Path(path).expanduser()
    if not target.exists():
        raise NotebookError(f"{path} does not exist; give a checkpoint file or a run's folder.")
    args = ["--watch", str(target.resolve())] if target.is_dir() else [str(target.resolve())]
    for name, value in sorted(options.items()):
        flag = OPTIONS[name]
        if flag is None or value is None or value is False:
            continue
        args += [flag] if value is True else [flag, _flag_value(name, value)]
    return args


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host if not security.is_wildcard(host) else "", 0))
        return int(probe.getsockname()[1])


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel), where an IFrame can be shown."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _drain(
    process: subprocess.Popen[bytes],
    lines: collections.deque[str],
    served: threading.Event,
    ended: threading.Event,
) -> None:
    # Read the server's output for as long as it runs: a pipe nobody reads would fill and
    # block the server. The first "serving"/"open" line means the page is up.
    assert process.stdout is not None
    for raw in process.stdout:
        line = raw.decode("utf-8", "replace")
        lines.append(line)
        if line.startswith(("ldam: serving on", "ldam: open ")):
            served.set()
    ended.set()


def _start(
    path: str | os.PathLike[str], options: dict[str, Any], key: tuple[Any, ...]
) -> Dashboard:
    host = str(options.get("host") or "127.0.0.1")
    options = dict(options)
    if options.get("port") is None:
        options["port"] = _free_port(host)
    port = int(options["port"])
    token = options.get("token")
    if token is None and not security.is_loopback(host):
        token = security.generate_token()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LDAM_TOKEN", None)
    if token is not None:
        env["LDAM_TOKEN"] = str(token)
    command = [sys.executable, "-m", "ldam", "serve", *serve_arguments(path, options)]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        # Its own session: a kernel interrupt (SIGINT to the group) leaves the server running.
        start_new_session=True,
    )
    lines: collections.deque[str] = collections.deque(maxlen=OUTPUT_LINES)
    served, ended = threading.Event(), threading.Event()
    threading.Thread(target=_drain, args=(process, lines, served, ended), daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not served.is_set() and not ended.is_set() and time.monotonic() < deadline:
        served.wait(0.1)
    if not served.is_set():
        _terminate(process)
        said = [line.strip() for line in lines if line.startswith("ldam: ")]
        if not ended.is_set():
            reason = f"it did not serve within {START_TIMEOUT_S:g} s"
        elif said:
            reason = said[-1][len("ldam: ") :]
        else:
            reason = f"it printed {''.join(lines)[-300:]!r}"
        if reason[:2].istitle():  # "The folder ..." -> "the folder ...", not "CUDA" -> "cUDA"
            reason = reason[0].lower() + reason[1:]
        raise NotebookError(f"The dashboard did not start: {reason.rstrip('.')}.")
    shown = "127.0.0.1" if security.is_wildcard(host) else host
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    page = f"http://{shown}:{port}/"
    url = security.login_url(host, port, str(token)) if token is not None else page
    return Dashboard(url, page, port, process, key, lines)


def _terminate(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # a clean shutdown: the worker stops too
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def show(
    checkpoint_or_dir: str | os.PathLike[str],
    *,
    width: str | int = "100%",
    height: int = 900,
    **options: Any,
) -> Dashboard:
    """Serve the dashboard for a checkpoint file, or follow a training run's folder, and show it.

    `options` are ``ldam serve``'s, with underscores: `compare`, `target`, `data`,
    `checkpoints`, `host`, `port` (default: a free one), `device`, `token`, `trust_checkpoint`,
    `arch`, `input_shape` (``(C, H, W)`` or ``"C,H,W"``), `idle_pause` and `watch_settle` (in
    seconds), `atlas` (an ``ldam atlas`` folder), `mean` and `std` (one number or one per
    channel: the input normalization) and `class_names` (a list, a comma list or a file of one
    name per line), which override the checkpoint's own, and `view`: ``"auto"`` (the default:
    a colour network in its input space, others in the paper's symmetric scale),
    ``"symmetric"`` or ``"input"``, the page's first view (its toggle switches). In a Jupyter kernel the page appears in an
    IFrame of `width` x `height` pixels (`width` may be a CSS length such as ``"100%"``);
    elsewhere its address is printed. The
    same file and options reuse the running server. Returns the `Dashboard`; raises
    `NotebookError` (one sentence) for a bad option or path, or a server that does not start.
    """
    global _current
    args = serve_arguments(checkpoint_or_dir, options)  # checks before anything stops or starts
    key = (tuple(args), options.get("token"))
    with _lock:
        current = _current
        if current is None or not current.running() or current.key != key:
            if current is not None:
                _terminate(current.process)
                _current = None
            _current = current = _start(checkpoint_or_dir, options, key)
    if _in_kernel():
        from IPython.display import IFrame, display

        display(IFrame(current.url, width=width, height=height))
    else:
        print(f"ldam: the dashboard is at {current.url}", flush=True)
    return current


def current() -> Dashboard | None:
    """The server `show` started, while it runs."""
    dashboard = _current
    return dashboard if dashboard is not None and dashboard.running() else None


def stop() -> bool:
    """Stop the server `show` started; True when one was running."""
    global _current
    with _lock:
        dashboard, _current = _current, None
    if dashboard is None:
        return False
    was_running = dashboard.running()
    _terminate(dashboard.process)
    return was_running


atexit.register(_remove_names_files)
atexit.register(stop)  # runs first (last registered): the server is stopped, then files go
