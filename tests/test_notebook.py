"""``ldam.notebook``: the dashboard from a notebook. Outside a kernel `show` prints the address
of a real ``ldam serve`` it started (reused for the same options, replaced for others, ended by
`stop`); inside a real Jupyter kernel (ipykernel, driven by jupyter_client) it displays an IFrame
of that address. Bad options and paths get one sentence."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

import ldam.notebook as notebook
from tests.support import PAIR, START_TIMEOUT_S, free_port, lenet_folder, proc_alive

TOKEN = "notebook-test-token-0123456789"


def closed(port: int, timeout: float = 20.0) -> bool:
    """True once nothing accepts connections on loopback `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.1)
    return False


def test_bad_options_and_paths_get_one_sentence(tmp_path: Path) -> None:
    checkpoint = lenet_folder() / PAIR[0]
    with pytest.raises(notebook.NotebookError) as err:
        notebook.show(checkpoint, temprature=0.1)
    assert str(err.value) == (
        "show() has no option 'temprature'; use one of: arch, atlas, checkpoints, class_names, "
        "compare, data, device, host, idle_pause, input_shape, mean, port, std, target, token, "
        "trust_checkpoint, view, watch_settle."
    )
    with pytest.raises(notebook.NotebookError) as err:
        notebook.show(tmp_path / "nothing.pt2")
    assert str(err.value) == (
        f"{tmp_path / 'nothing.pt2'} does not exist; give a checkpoint file or a run's folder."
    )
    assert notebook.serve_arguments(tmp_path, {"input_shape": (1, 28, 28), "idle_pause": 0}) == [
        "--watch",
        str(tmp_path.resolve()),
        "--idle-pause",
        "0",
        "--input-shape",
        "1,28,28",
    ]
    assert notebook.current() is None


def test_normalization_and_class_names_become_the_servers_flags(tmp_path: Path) -> None:
    from ldam.cli.main import build_parser
    from ldam.cli.options import metadata_option
    from ldam.metadata import MetadataOverride

    checkpoint = lenet_folder() / PAIR[0]
    names = ["zero, the digit", *(str(k) for k in range(1, 10))]  # a name may hold a comma
    options = {"mean": [0.5], "std": 0.25, "class_names": names, "view": "symmetric"}
    args = notebook.serve_arguments(checkpoint, options)
    assert args[:2] == [str(checkpoint.resolve()), "--class-names"]
    assert args[3:] == ["--mean", "0.5", "--std", "0.25", "--view", "symmetric"]
    assert notebook.serve_arguments(checkpoint, options) == args  # same names, same file: reuse
    # What the server parses from them: the very values given (the view: auto unless given).
    parsed = build_parser().parse_args(["serve", *args])
    assert metadata_option(parsed) == MetadataOverride((0.5,), (0.25,), tuple(names))
    assert parsed.view == "symmetric"
    assert build_parser().parse_args(["serve"]).view == "auto"
    for bad, message in [
        ({"std": [0.3, 0]}, "std must be above 0 for every channel, not [0.3, 0]."),
        ({"mean": "x"}, "mean must be one number or one per channel, comma-separated, not 'x'."),
    ]:
        with pytest.raises(notebook.NotebookError) as err:
            notebook.serve_arguments(checkpoint, bad)
        assert str(err.value) == message


def test_show_outside_a_kernel_prints_the_address_and_reuses_the_server(
    capsys: pytest.CaptureFixture[str],
) -> None:
    checkpoint = lenet_folder() / PAIR[0]
    try:
        first = notebook.show(checkpoint, device="cpu", idle_pause=0)
        assert capsys.readouterr().out == f"ldam: the dashboard is at {first.url}\n"
        assert first.url == first.page == f"http://127.0.0.1:{first.port}/"
        page = httpx.get(first.url, trust_env=False, timeout=10)
        assert page.status_code == 200 and "<title>ldam" in page.text
        state = httpx.get(f"{first.page}api/state", trust_env=False, timeout=10).json()
        assert state["params"]["checkpoint"] == PAIR[0]
        # The same file and options: the same server.
        again = notebook.show(checkpoint, device="cpu", idle_pause=0)
        assert again is first and again.process.pid == first.process.pid
        assert notebook.current() is first
        # Other options: the running server is stopped first; this one cannot start, and the
        # server's own refusal comes back as one sentence.
        with pytest.raises(notebook.NotebookError) as err:
            notebook.show(checkpoint, device="cpu", target="fc3:1@2,3")
        assert str(err.value) == (
            "The dashboard did not start: the dashboard samples whole units, so the position "
            "in 'fc3:1@2,3' cannot be shown; use --target fc3:1 here, or ldam sample for a "
            "position."
        )
        assert not first.running() and closed(first.port) and notebook.current() is None
        assert notebook.stop() is False
    finally:
        notebook.stop()


def test_show_in_a_jupyter_kernel_displays_an_iframe() -> None:
    pytest.importorskip("ipykernel")
    from jupyter_client.manager import start_new_kernel

    checkpoint = lenet_folder() / PAIR[0]
    port = free_port()
    manager, client = start_new_kernel(kernel_name="python3")
    try:
        # A token (the rule for any bind but loopback, here given on loopback): the frame
        # opens the login link, whose fragment carries the token to the page only.
        code = (
            "import ldam.notebook\n"
            f"d = ldam.notebook.show({str(checkpoint)!r}, port={port}, device='cpu', "
            f"idle_pause=0, height=700, token={TOKEN!r})\n"
            "print(d.process.pid)"
        )
        outputs = run_cell(client, code)
        html = [o["data"]["text/html"] for o in outputs if o.get("data", {}).get("text/html")]
        assert len(html) == 1 and "<iframe" in html[0]
        assert f'src="http://127.0.0.1:{port}/login#{TOKEN}"' in html[0]
        assert 'width="100%"' in html[0] and 'height="700"' in html[0]
        printed = "".join(o.get("text", "") for o in outputs if o.get("name") == "stdout")
        pid = int(printed.split()[-1])  # nothing else was printed: no address outside a frame
        assert printed.strip() == str(pid) and proc_alive(pid)
        page = f"http://127.0.0.1:{port}/"
        assert httpx.get(page, trust_env=False).status_code == 401
        authorized = {"authorization": f"Bearer {TOKEN}"}
        assert httpx.get(page, headers=authorized, trust_env=False).status_code == 200
        stopped = run_cell(client, "print(ldam.notebook.stop())")
        assert [o.get("text") for o in stopped] == ["True\n"]
        assert closed(port) and not proc_alive(pid)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(client: object, code: str) -> list[dict]:
    """Run `code` in the kernel; the contents of the outputs it produced (display_data,
    stream), after the kernel is idle again."""
    msg_id = client.execute(code)  # type: ignore[attr-defined]
    outputs = []
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=START_TIMEOUT_S)  # type: ignore[attr-defined]
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        if kind in ("display_data", "stream"):
            outputs.append(content)
        if kind == "status" and content["execution_state"] == "idle":
            client.get_shell_msg(timeout=START_TIMEOUT_S)  # type: ignore[attr-defined]
            return outputs
    raise AssertionError(f"the cell did not finish: {code}")
