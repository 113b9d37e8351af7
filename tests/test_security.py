"""server/security.py: bind rules, token auth, Origin and Host checks, checkpoint confinement.

The middleware tests run a small real Starlette app through its TestClient (no mocks); the
tests against the real dashboard server are in the second half and start `ldam serve` in a
subprocess on a free loopback port.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from ldam.web.security import (
    MIN_TOKEN_LENGTH,
    SecurityError,
    SecurityMiddleware,
    TokenAuth,
    accept_subprotocol,
    allowed_hosts,
    is_loopback,
    list_checkpoints,
    login_url,
    origin_allowed,
    require_token_for_bind,
    resolve_checkpoint,
    session_cookie_name,
)
from tests.support import REPO, LiveServer, free_port

TOKEN = "t0ken-for-tests_0123456789abcdef"

# --- bind ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.5", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_loopback_bind_needs_no_token() -> None:
    assert require_token_for_bind("127.0.0.1", None) is None
    assert require_token_for_bind("localhost", "") is None
    assert require_token_for_bind("::1", TOKEN) == TOKEN


def test_non_loopback_bind_generates_a_token() -> None:
    first = require_token_for_bind("0.0.0.0", None)
    second = require_token_for_bind("192.168.1.5", None)
    assert first is not None and second is not None
    assert len(first) >= 40 and first != second
    assert all(c.isalnum() or c in "-_" for c in first)


def test_non_loopback_bind_with_empty_token_is_refused() -> None:
    with pytest.raises(SecurityError) as err:
        require_token_for_bind("0.0.0.0", "")
    assert str(err.value) == (
        "Binding 0.0.0.0 without a token is refused; give a --token or omit it to get one."
    )


def test_weak_or_odd_tokens_are_refused() -> None:
    with pytest.raises(SecurityError) as err:
        require_token_for_bind("0.0.0.0", "short")
    assert str(err.value) == f"The token must be at least {MIN_TOKEN_LENGTH} characters long."
    with pytest.raises(SecurityError) as err:
        require_token_for_bind("0.0.0.0", "has a space in it, 1234567")
    assert str(err.value) == "The token may only contain letters, digits, '-', '_', '.' and '~'."
    assert require_token_for_bind("10.1.2.3", TOKEN) == TOKEN


def test_login_url_puts_the_token_in_the_fragment() -> None:
    assert login_url("0.0.0.0", 8123, TOKEN) == f"http://127.0.0.1:8123/login#{TOKEN}"
    assert login_url("::1", 80, TOKEN) == f"http://[::1]:80/login#{TOKEN}"
    assert login_url("10.0.0.2", 9000, "x" * 16) == "http://10.0.0.2:9000/login#" + "x" * 16


# --- Origin and Host -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "host", "expected"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", True),
        ("http://localhost:8000", "127.0.0.1", True),
        ("http://[::1]:8000", "127.0.0.1", True),
        ("HTTP://LOCALHOST:8000", "127.0.0.1", True),
        ("http://127.0.0.1:8001", "127.0.0.1", False),
        ("http://127.0.0.1", "127.0.0.1", False),
        ("https://evil.example", "127.0.0.1", False),
        ("http://localhost.evil.example:8000", "127.0.0.1", False),
        ("null", "127.0.0.1", False),
        ("file://", "127.0.0.1", False),
        ("http://127.0.0.1:8000/path", "127.0.0.1", False),
        ("http://127.0.0.1:notaport", "127.0.0.1", False),
        ("http://10.0.0.2:8000", "10.0.0.2", True),
        ("http://10.0.0.3:8000", "10.0.0.2", False),
        (None, "127.0.0.1", True),
        (None, "0.0.0.0", True),
    ],
)
def test_origin_allowed(origin: str | None, host: str, expected: bool) -> None:
    assert origin_allowed(origin, host, 8000, []) is expected


def test_origin_extra_and_wildcard_same_origin() -> None:
    assert origin_allowed(
        "https://lab.example:8443", "127.0.0.1", 8000, ["https://lab.example:8443/"]
    )
    # On a wildcard bind the page's address is the request's own Host header.
    assert origin_allowed("http://box.lan:8000", "0.0.0.0", 8000, [], request_host="box.lan:8000")
    assert not origin_allowed(
        "http://evil.lan:8000", "0.0.0.0", 8000, [], request_host="box.lan:8000"
    )
    assert not origin_allowed("http://box.lan:8000", "0.0.0.0", 8000, [], request_host=None)


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1") == ["127.0.0.1", "localhost", "[::1]"]
    assert allowed_hosts("10.0.0.2", ["box.lan"]) == [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "10.0.0.2",
        "box.lan",
    ]
    assert allowed_hosts("fe80::1") == ["127.0.0.1", "localhost", "[::1]", "[fe80::1]"]
    assert allowed_hosts("0.0.0.0") == ["*"]


# --- checkpoint confinement ------------------------------------------------------------------


@pytest.fixture
def ckpt_root(tmp_path: Path) -> Path:
    root = tmp_path / "checkpoints"
    (root / "runs").mkdir(parents=True)
    (root / "a.pt2").write_bytes(b"a")
    (root / "runs" / "b.pt").write_bytes(b"b")
    (root / "notes.txt").write_text("not a checkpoint")
    (root / "folder.pt").mkdir()
    outside = tmp_path / "secret.pt"
    outside.write_bytes(b"secret")
    (root / "escape.pt").symlink_to(outside)
    (root / "inside_link.pt").symlink_to(root / "a.pt2")
    (root / "dirlink").symlink_to(tmp_path)
    return root


def test_resolve_checkpoint_accepts_files_inside(ckpt_root: Path) -> None:
    assert resolve_checkpoint(ckpt_root, "a.pt2") == (ckpt_root / "a.pt2").resolve()
    assert resolve_checkpoint(ckpt_root, "runs/b.pt") == (ckpt_root / "runs" / "b.pt").resolve()
    # A symlink that stays inside the folder is fine; it resolves to its target.
    assert resolve_checkpoint(ckpt_root, "inside_link.pt") == (ckpt_root / "a.pt2").resolve()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "The checkpoint name is empty."),
        ("   ", "The checkpoint name is empty."),
        ("a\x00.pt", "The checkpoint name contains a NUL character."),
        ("/etc/passwd", "Checkpoint '/etc/passwd' is an absolute path; give a name in the folder."),
        ("C:\\x.pt", "Checkpoint 'C:\\\\x.pt' is an absolute path; give a name in the folder."),
        (
            "\\\\server\\x.pt",
            "Checkpoint '\\\\\\\\server\\\\x.pt' is an absolute path; give a name in the folder.",
        ),
        ("~/x.pt", "Checkpoint '~/x.pt' is an absolute path; give a name in the folder."),
        ("../secret.pt", "Checkpoint '../secret.pt' contains '..'; give a name in the folder."),
        (
            "runs/../../secret.pt",
            "Checkpoint 'runs/../../secret.pt' contains '..'; give a name in the folder.",
        ),
        (
            "runs\\..\\..\\secret.pt",
            "Checkpoint 'runs\\\\..\\\\..\\\\secret.pt' contains '..'; give a name in the folder.",
        ),
        ("escape.pt", "Checkpoint 'escape.pt' leads out of the checkpoint folder."),
        ("dirlink/secret.pt", "Checkpoint 'dirlink/secret.pt' leads out of the checkpoint folder."),
        ("missing.pt", "Checkpoint 'missing.pt' does not exist in the checkpoint folder."),
        ("folder.pt", "Checkpoint 'folder.pt' is not a file."),
        (
            "notes.txt",
            "Checkpoint 'notes.txt' does not end in one of .pt2, .pt, .pth, .ts, .safetensors, .ckpt.",
        ),
    ],
)
def test_resolve_checkpoint_refuses(ckpt_root: Path, name: str, message: str) -> None:
    with pytest.raises(SecurityError) as err:
        resolve_checkpoint(ckpt_root, name)
    assert str(err.value) == message


def test_list_checkpoints_offers_only_what_resolves(ckpt_root: Path) -> None:
    (ckpt_root / "with space.pt").write_bytes(b"c")  # a name a `set` message cannot carry
    assert list_checkpoints(ckpt_root) == ["a.pt2", "inside_link.pt"]
    assert list_checkpoints(ckpt_root / "nope") == []


# --- auth and middleware on a real Starlette app ---------------------------------------------


def make_app(token: str | None, host: str = "127.0.0.1", port: int = 8000) -> Starlette:
    auth = TokenAuth(token, port)

    async def api(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=accept_subprotocol(websocket))
        await websocket.send_text("hello")
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/api/status", api, methods=["GET", "POST"]),
            WebSocketRoute("/ws", ws),
            *auth.routes(),
        ]
    )
    app.add_middleware(SecurityMiddleware, auth=auth, host=host, port=port)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))
    return app


def client(app: Starlette, host: str = "127.0.0.1:8000") -> TestClient:
    return TestClient(app, base_url=f"http://{host}", headers={"host": host})


def test_http_requires_the_token_when_set() -> None:
    c = client(make_app(TOKEN))
    r = c.get("/api/status")
    assert (r.status_code, r.text) == (
        401,
        "A token is required; open the login link printed at start.",
    )
    assert c.get("/api/status", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"}).text == "ok"
    # The token itself is not a valid cookie value: the cookie holds a derived value.
    c.cookies.set(session_cookie_name(8000), TOKEN)
    assert c.get("/api/status").status_code == 401


def test_login_sets_an_httponly_strict_cookie() -> None:
    c = client(make_app(TOKEN))
    page = c.get("/login")
    assert page.status_code == 200 and "location.hash" in page.text
    assert page.headers["cache-control"] == "no-store"
    bad = c.post("/login", data={"token": "nope"}, follow_redirects=False)
    assert (bad.status_code, bad.text) == (401, "The token is wrong.")
    good = c.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert good.status_code == 303 and good.headers["location"] == "/"
    cookie = good.headers["set-cookie"]
    assert cookie.startswith("ldam_session_8000=") and TOKEN not in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert c.get("/api/status").text == "ok"
    huge = c.post("/login", content=b"token=" + b"x" * 5000, follow_redirects=False)
    assert (huge.status_code, huge.text) == (413, "The login form is too large.")


def test_session_cookie_is_named_per_port() -> None:
    # Browsers keep cookies per host, not per port: two servers on one host (ports 8000 and
    # 8001) must not overwrite each other's session, and one's cookie never opens the other.
    assert session_cookie_name(8000) == "ldam_session_8000"
    a = client(make_app(TOKEN, port=8000), "127.0.0.1:8000")
    other_token = "another-token-0123456789"
    b = client(make_app(other_token, port=8001), "127.0.0.1:8001")
    cookie_a = a.post("/login", data={"token": TOKEN}, follow_redirects=False)
    cookie_b = b.post("/login", data={"token": other_token}, follow_redirects=False)
    assert cookie_a.headers["set-cookie"].startswith("ldam_session_8000=")
    assert cookie_b.headers["set-cookie"].startswith("ldam_session_8001=")
    # One browser holding both cookies (one jar per host) is let in by both servers.
    jar = {"ldam_session_8000": a.cookies["ldam_session_8000"]}
    jar["ldam_session_8001"] = b.cookies["ldam_session_8001"]
    header = "; ".join(f"{k}={v}" for k, v in jar.items())
    plain_a = client(make_app(TOKEN, port=8000), "127.0.0.1:8000")
    plain_b = client(make_app(other_token, port=8001), "127.0.0.1:8001")
    assert plain_a.get("/api/status", headers={"cookie": header}).text == "ok"
    assert plain_b.get("/api/status", headers={"cookie": header}).text == "ok"
    # A's cookie under B's name is refused by B.
    swapped = f"ldam_session_8001={jar['ldam_session_8000']}"
    assert plain_b.get("/api/status", headers={"cookie": swapped}).status_code == 401


def test_no_token_means_open_on_loopback() -> None:
    c = client(make_app(None))
    assert c.get("/api/status").text == "ok"
    with c.websocket_connect("/ws", headers={"origin": "http://127.0.0.1:8000"}) as ws:
        assert ws.receive_text() == "hello"


def test_websocket_token_by_cookie_or_subprotocol() -> None:
    c = client(make_app(TOKEN))
    origin = "http://127.0.0.1:8000"
    with (
        pytest.raises(WebSocketDisconnect) as err,
        c.websocket_connect("/ws", headers={"origin": origin}),
    ):
        pass
    assert err.value.code == 1008
    # Subprotocol: the server answers with plain "ldam", never echoing the token.
    with c.websocket_connect(
        "/ws", headers={"origin": origin}, subprotocols=["ldam", f"ldam.token.{TOKEN}"]
    ) as ws:
        assert ws.accepted_subprotocol == "ldam"
        assert ws.receive_text() == "hello"
    with (
        pytest.raises(WebSocketDisconnect),
        c.websocket_connect(
            "/ws",
            headers={"origin": origin},
            subprotocols=["ldam", "ldam.token.wrong-token-0123456789"],
        ),
    ):
        pass
    c.post("/login", data={"token": TOKEN})
    # TestClient's websocket does not read its cookie jar; send the cookie as a browser would.
    name = session_cookie_name(8000)
    cookie = f"{name}={c.cookies[name]}"
    with c.websocket_connect("/ws", headers={"origin": origin, "cookie": cookie}) as ws:
        assert ws.receive_text() == "hello"


def test_cross_origin_websocket_refused_even_with_token() -> None:
    c = client(make_app(None))
    for origin in ["https://evil.example", "http://127.0.0.1:9999", "null"]:
        with (
            pytest.raises(WebSocketDisconnect) as err,
            c.websocket_connect("/ws", headers={"origin": origin}),
        ):
            pass
        assert err.value.code == 1008
    c = client(make_app(TOKEN))
    with (
        pytest.raises(WebSocketDisconnect),
        c.websocket_connect(
            "/ws", headers={"origin": "https://evil.example", "authorization": f"Bearer {TOKEN}"}
        ),
    ):
        pass


def test_cross_site_post_refused() -> None:
    c = client(make_app(None))
    r = c.post("/api/status", headers={"origin": "https://evil.example"})
    assert (r.status_code, r.text) == (403, "Requests from another site are refused.")
    assert c.post("/api/status", headers={"origin": "http://localhost:8000"}).text == "ok"
    assert c.post("/api/status").text == "ok"  # programs send no Origin
    assert c.get("/api/status", headers={"origin": "https://evil.example"}).text == "ok"


def test_dns_rebinding_host_refused() -> None:
    c = client(make_app(None), host="evil.example:8000")
    r = c.get("/api/status")
    assert (r.status_code, r.text) == (400, "Invalid host header")
    assert client(make_app(None), host="localhost:8000").get("/api/status").text == "ok"


# --- the real server -------------------------------------------------------------------------


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`python -m ldam ARGS` in its own process group, all of which is killed on timeout."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ldam", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"`ldam {' '.join(args)}` still ran after {timeout} s:\n{err[-2000:]}"
        ) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_cli_refuses_non_loopback_bind_without_token() -> None:
    r = run_cli("serve", "--host", "0.0.0.0", "--port", "1", "--token", "")
    assert r.returncode == 2, r.stderr
    assert r.stderr == (
        "ldam: Binding 0.0.0.0 without a token is refused; give a --token or omit it to get one.\n"
    )
    print("non-loopback bind with an empty token: refused, exit 2")


class _WritesMarker:
    """Unpickling this calls `Path.write_text` on the marker: code run from a data file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path, str]]:
        return (Path.write_text, (self.marker, "pwned"))


def evil_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    import torch

    # Protocol 2, torch's own default, so the refusal is about the code, not the protocol.
    torch.save({"state_dict": _WritesMarker(marker)}, path, pickle_protocol=2)
    assert not marker.exists()
    return path, marker


def test_pickle_that_runs_code_is_refused_by_the_loader(tmp_path: Path) -> None:
    from ldam.models.loading import CheckpointError, load_checkpoint

    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()
    # The file really does run code when unpickled without restrictions: the test can fail.
    import torch

    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"
    print("malicious pickle: refused by load_checkpoint, marker absent until trusted load")


def test_pickle_that_runs_code_is_refused_by_ldam_serve(tmp_path: Path) -> None:
    path, marker = evil_checkpoint(tmp_path)
    r = run_cli("serve", str(path), "--port", str(free_port()), timeout=120)
    assert r.returncode == 2, r.stderr
    assert (
        r.stderr.startswith("ldam: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    )
    assert not marker.exists()
    print(f"ldam serve on a malicious pickle: exit 2, {r.stderr.strip()!r}, marker absent")


def test_pickle_is_never_unpickled_through_plain_pickle(tmp_path: Path) -> None:
    # A plain (non-torch) pickle file renamed .pt: same refusal, same absent marker.
    from ldam.models.loading import CheckpointError, load_checkpoint

    marker = tmp_path / "marker.txt"
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(_WritesMarker(marker), protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


# --- the real server with a token, and a checkpoint folder holding traps ---------------------


@pytest.fixture(scope="module")
def trap_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A checkpoint folder with a symlink leading out of it and a pickle that runs code."""
    base = tmp_path_factory.mktemp("traps")
    folder = base / "checkpoints"
    folder.mkdir()
    outside = base / "outside.pt"
    outside.write_bytes(b"not yours")
    (folder / "escape.pt").symlink_to(outside)
    path, marker = evil_checkpoint(base)
    path.rename(folder / "evil.pt")
    return folder, marker


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, trap_folder: tuple[Path, Path]
) -> Iterator[LiveServer]:
    """`ldam serve --token TOKEN --checkpoints TRAPS` on a free loopback port."""
    live = LiveServer(
        tmp_path_factory.mktemp("guarded"), "--checkpoints", str(trap_folder[0]), token=TOKEN
    )
    try:
        live.wait_ready()
        yield live
    finally:
        live.stop()


def _ws_status(live: LiveServer, **kwargs: Any) -> int:
    """The HTTP status of a websocket handshake (101 when accepted)."""
    try:
        with connect(live.ws_url, compression=None, proxy=None, open_timeout=20, **kwargs) as ws:
            ws.recv(timeout=20)
            return 101
    except InvalidStatus as err:
        return err.response.status_code


def test_default_bind_is_loopback(guarded: LiveServer) -> None:
    from ldam.cli.main import build_parser

    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    # The real server listens on 127.0.0.1 only: /proc/net/tcp lists its socket as 0100007F.
    port = f"{guarded.port:04X}"
    listening = [
        line.split()[1]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{port}") and line.split()[3] == "0A"
    ]
    assert listening == [f"0100007F:{port}"]


def test_real_server_token_required(guarded: LiveServer) -> None:
    origin = guarded.origin
    with httpx.Client(base_url=guarded.base, trust_env=False) as anon:
        r = anon.get("/api/state")
        assert (r.status_code, r.text) == (
            401,
            "A token is required; open the login link printed at start.",
        )
        assert anon.get("/").status_code == 401
        assert anon.get("/api/state?token=" + TOKEN).status_code == 401  # never in a URL
        login = anon.post("/login", data={"token": TOKEN}, follow_redirects=False)
        assert login.status_code == 303 and "HttpOnly" in login.headers["set-cookie"]
        assert anon.get("/api/state").status_code == 200
        name = session_cookie_name(guarded.port)
        assert login.headers["set-cookie"].startswith(f"{name}=")
        cookie = f"{name}={anon.cookies[name]}"
    assert _ws_status(guarded, origin=origin) == 403
    assert (
        _ws_status(guarded, origin=origin, subprotocols=["ldam", "ldam.token.wrong-0123456789abc"])
        == 403
    )
    assert _ws_status(guarded, origin=origin, subprotocols=["ldam", f"ldam.token.{TOKEN}"]) == 101
    assert _ws_status(guarded, origin=origin, additional_headers={"cookie": cookie}) == 101
    assert _ws_status(guarded, additional_headers={"authorization": f"Bearer {TOKEN}"}) == 101
    print(
        "token server: HTTP 401 and websocket 403 without the token; cookie, bearer, subprotocol accepted"
    )


def test_real_server_cross_origin_websocket_refused(guarded: LiveServer) -> None:
    bearer = {"authorization": f"Bearer {TOKEN}"}
    refused = [
        "https://evil.example",
        f"http://evil.example:{guarded.port}",
        "http://127.0.0.1:1",
        "null",
    ]
    for origin in refused:
        assert _ws_status(guarded, origin=origin, additional_headers=bearer) == 403, origin
    for origin in [guarded.origin, f"http://localhost:{guarded.port}"]:
        assert _ws_status(guarded, origin=origin, additional_headers=bearer) == 101, origin
    print(f"cross-origin websocket: {len(refused)} foreign origins refused with 403")


def test_real_server_rebinding_host_refused(guarded: LiveServer) -> None:
    r = guarded.http.get("/api/state", headers={"host": f"evil.example:{guarded.port}"})
    assert (r.status_code, r.text) == (400, "Invalid host header")
    assert (
        guarded.http.get("/api/state", headers={"host": f"localhost:{guarded.port}"}).status_code
        == 200
    )


def test_real_server_refuses_path_outside_checkpoint_folder(guarded: LiveServer) -> None:
    with guarded.viewer() as v:
        info = v.wait_for(lambda m: m["type"] == "info", 30, "info")
        assert "escape.pt" not in info["checkpoints"] and "evil.pt" in info["checkpoints"]
        v.send({"type": "set", "checkpoint": "escape.pt"})
        error = v.wait_for(lambda m: m["type"] == "error", 30, "error")
        assert error == {
            "type": "error",
            "field": "checkpoint",
            "message": "Checkpoint 'escape.pt' leads out of the checkpoint folder.",
        }
        for name in ["../outside.pt", "/etc/passwd", "sub/../../outside.pt"]:
            v.send({"type": "set", "checkpoint": name})
            error = v.wait_for(lambda m: m["type"] == "error", 30, "error")
            assert error["field"] == "checkpoint", error
        assert guarded.state()["params"]["checkpoint"] is None


def test_real_server_refuses_malicious_checkpoint_from_picker(
    guarded: LiveServer, trap_folder: tuple[Path, Path]
) -> None:
    _, marker = trap_folder
    with guarded.viewer() as v:
        before = guarded.state()
        v.send({"type": "set", "checkpoint": "evil.pt"})
        error = v.wait_for(lambda m: m["type"] == "error", 60, "error for evil.pt")
        print(
            f"picker on a malicious pickle: {error['message']!r}; marker present: {marker.exists()}"
        )
        assert error["field"] == "checkpoint"
        frames = v.frames_for(2.0)
        assert len(frames) >= 2
    assert not marker.exists()
    after = guarded.state()
    assert after["status"]["worker"] == "running"
    assert after["status"]["pid"] == before["status"]["pid"]
    assert after["params"]["checkpoint"] == before["params"]["checkpoint"]
