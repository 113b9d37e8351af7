"""What the dashboard lets in: bind rules, token auth, Origin and Host checks, checkpoint paths.

The web app calls these; nothing here imports torch or knows about the sampler. The promises
they implement, and the tests that prove them, are listed in SECURITY.md.

Token flow (the token never appears in a URL that a log could print):

1. ``ldam serve --host 0.0.0.0`` generates a token (``require_token_for_bind``) and prints
   ``login_url(...)``: ``http://HOST:PORT/login#TOKEN``. The part after ``#`` is a fragment,
   which browsers never send to the server, so no access log sees it.
2. ``GET /login`` serves a tiny page whose script POSTs the fragment to ``POST /login``.
3. ``POST /login`` checks the token and answers with an HttpOnly, SameSite=Strict cookie
   holding a value derived from the token; the page then goes to ``/``.
4. Every other HTTP request and every websocket carries that cookie (browsers send it on
   same-site websockets too). Programs without cookies send ``Authorization: Bearer TOKEN``
   or offer the websocket subprotocol ``ldam.token.TOKEN`` next to ``ldam``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ldam.errors import UserError

# Limits the app enforces. A control message above MAX_MESSAGE_BYTES (`ldam.wire.limits`) is
# answered with an error and dropped; anything above WS_MAX_SIZE makes the websocket protocol
# itself close that one connection (1009) before the bytes are buffered.
WS_MAX_SIZE = 64 * 1024
# Above this many open websockets new ones are refused; the load test uses 40.
MAX_CLIENTS = 64
# A client whose send has not completed in this long is treated as gone and dropped.
SEND_TIMEOUT_S = 5.0
# Pings find clients that vanished without closing (cable pulled, process killed).
WS_PING_INTERVAL_S = 10.0
WS_PING_TIMEOUT_S = 10.0
MAX_LOGIN_BODY_BYTES = 1024

MIN_TOKEN_LENGTH = 16
# The session cookie is named per port (`session_cookie_name`): browsers keep cookies per
# host, not per port, so two ldam servers on one host would otherwise overwrite each other's.
TOKEN_COOKIE_PREFIX = "ldam_session_"
WS_SUBPROTOCOL = "ldam"
WS_TOKEN_SUBPROTOCOL_PREFIX = "ldam.token."
# Paths reachable without the token: the login page itself.
LOGIN_PATH = "/login"

_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# .ckpt: PyTorch Lightning's training checkpoints (a state dict, read with --arch).
CHECKPOINT_SUFFIXES = (".pt2", ".pt", ".pth", ".ts", ".safetensors", ".ckpt")
# A checkpoint name the picker offers: a plain file name in the folder. (A `set` message may
# also name a file in a subfolder, "runs/a.pt"; `ldam.wire.params` checks that text, and
# `resolve_checkpoint` confines both.) "=" is in Lightning's names: epoch=3-step=1200.ckpt.
CHECKPOINT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=\-]{0,199}")

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class SecurityError(UserError):
    """A request or setting the server refuses; the message is one sentence for the user."""


# --- bind ------------------------------------------------------------------------------------


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(host: str) -> bool:
    """True when `host` (an IP literal or name, IPv6 with or without brackets) only listens on
    this machine: 127.0.0.0/8, ::1 and the usual names for them. Wildcards are not loopback."""
    host = _strip_brackets(host.strip().lower())
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_wildcard(host: str) -> bool:
    """True when `host` binds every interface (0.0.0.0, ::), so the page's own address is not
    known in advance."""
    return _strip_brackets(host.strip()) in _WILDCARD_HOSTS


def generate_token() -> str:
    """A fresh URL-safe token with 256 bits of randomness (43 characters)."""
    return secrets.token_urlsafe(32)


def require_token_for_bind(host: str, token: str | None) -> str | None:
    """The token the server will require, given the bind address and the operator's token.

    - loopback, no token: None (no auth; only local processes can connect).
    - any other address, no token (None): a generated token, which the caller prints.
    - an explicit token: kept, if at least MIN_TOKEN_LENGTH characters long.
    - any other address with the empty string (``--token ""``): refused with SecurityError.
    """
    if token is None:
        return None if is_loopback(host) else generate_token()
    if token == "":
        if is_loopback(host):
            return None
        raise SecurityError(
            f"Binding {host} without a token is refused; give a --token or omit it to get one."
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise SecurityError(f"The token must be at least {MIN_TOKEN_LENGTH} characters long.")
    if any(not (c.isalnum() or c in "-_.~") for c in token):
        # It travels in a cookie and a websocket subprotocol, which allow only these.
        raise SecurityError("The token may only contain letters, digits, '-', '_', '.' and '~'.")
    return token


def login_url(host: str, port: int, token: str) -> str:
    """The one-time link to print at start: the token rides in the fragment, never sent to the
    server or written to its logs."""
    shown = "127.0.0.1" if is_wildcard(host) else host
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}{LOGIN_PATH}#{token}"


# --- token auth ------------------------------------------------------------------------------


def _cookie_value(token: str) -> str:
    # The cookie holds a value derived from the token, so a stolen cookie never shows the token
    # the operator typed (which may be reused elsewhere).
    return hmac.new(token.encode(), b"ldam-session-cookie", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ldam: sign in</title></head>
<body><p id="msg">Signing in...</p>
<form id="f" method="post" action="/login"><label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off"><button>Sign in</button></form>
<script>
const t = decodeURIComponent(location.hash.slice(1));
history.replaceState(null, "", location.pathname);
if (t) { document.getElementById("token").value = t; document.getElementById("f").submit(); }
else { document.getElementById("msg").textContent = "Paste the token printed at start."; }
</script></body></html>
"""


def session_cookie_name(port: int) -> str:
    """The session cookie's name for the server on `port` (``ldam_session_8000``)."""
    return f"{TOKEN_COOKIE_PREFIX}{int(port)}"


class TokenAuth:
    """Checks the token on HTTP requests and websockets; `token=None` lets everything in.

    Accepted credentials: the session cookie set by ``POST /login``, an ``Authorization: Bearer``
    header, or (websockets only) the subprotocol ``ldam.token.TOKEN``. All comparisons use
    `hmac.compare_digest`. The cookie is named after `port` (`session_cookie_name`).
    """

    def __init__(self, token: str | None, port: int = 8000) -> None:
        self.token = token
        self.cookie_name = session_cookie_name(port)
        self._cookie = _cookie_value(token) if token else None

    @property
    def required(self) -> bool:
        """True when requests must carry the token."""
        return self.token is not None

    def _check(self, conn: HTTPConnection) -> bool:
        if self.token is None:
            return True
        assert self._cookie is not None
        cookie = conn.cookies.get(self.cookie_name)
        if cookie is not None and _same(cookie, self._cookie):
            return True
        scheme, _, value = conn.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and _same(value.strip(), self.token)

    def check_http(self, request: HTTPConnection) -> bool:
        """True when the HTTP request carries the token (cookie or bearer header)."""
        return self._check(request)

    def check_websocket(self, websocket: HTTPConnection) -> bool:
        """True when the websocket handshake carries the token (cookie, bearer header or the
        ``ldam.token.TOKEN`` subprotocol). Call before ``accept()``."""
        if self._check(websocket):
            return True
        assert self.token is not None
        for offered in offered_subprotocols(websocket):
            if offered.startswith(WS_TOKEN_SUBPROTOCOL_PREFIX) and _same(
                offered[len(WS_TOKEN_SUBPROTOCOL_PREFIX) :], self.token
            ):
                return True
        return False

    def set_cookie(self, response: Response) -> None:
        """Add the session cookie to `response` (HttpOnly, SameSite=Strict, whole site)."""
        if self._cookie is not None:
            response.set_cookie(
                self.cookie_name, self._cookie, httponly=True, samesite="strict", path="/"
            )

    async def login_page(self, request: Request) -> Response:
        """``GET /login``: the page that posts the URL fragment back as a form."""
        return HTMLResponse(_LOGIN_PAGE, headers={"Cache-Control": "no-store"})

    async def login(self, request: Request) -> Response:
        """``POST /login`` with form field ``token``: 303 to ``/`` with the cookie set, or 401."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_LOGIN_BODY_BYTES:
                return PlainTextResponse("The login form is too large.", status_code=413)
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        given = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if not _same(given, self.token):
            return PlainTextResponse("The token is wrong.", status_code=401)
        response = RedirectResponse("/", status_code=303)
        self.set_cookie(response)
        return response

    def routes(self) -> list[BaseRoute]:
        """The login routes, to add to an app: ``app.router.routes.extend(auth.routes())``."""
        return [
            Route(LOGIN_PATH, self.login_page, methods=["GET"]),
            Route(LOGIN_PATH, self.login, methods=["POST"]),
        ]


def offered_subprotocols(websocket: HTTPConnection) -> list[str]:
    """The subprotocols the client offered in ``Sec-WebSocket-Protocol``, in order."""
    offered = websocket.scope.get("subprotocols")
    if offered is not None:  # the ASGI server has already split the header
        return [str(p) for p in offered]
    raw = ",".join(websocket.headers.getlist("sec-websocket-protocol"))
    return [p.strip() for p in raw.split(",") if p.strip()]


def accept_subprotocol(websocket: HTTPConnection) -> str | None:
    """The subprotocol to pass to ``accept()``: ``ldam`` when offered, else None. Never the
    token one, so the server does not echo the token back."""
    return WS_SUBPROTOCOL if WS_SUBPROTOCOL in offered_subprotocols(websocket) else None


# --- Origin and Host -------------------------------------------------------------------------


def _hostport(host: str, port: int) -> str:
    host = host.lower()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def origin_allowed(
    origin: str | None,
    host: str,
    port: int,
    extra: Sequence[str] = (),
    request_host: str | None = None,
) -> bool:
    """Whether a websocket from page `origin` may connect to a server bound to `host`:`port`.

    Allowed: ``http://127.0.0.1:PORT``, ``http://localhost:PORT``, ``http://[::1]:PORT``, the
    bound host itself, and each exact origin in `extra`. On a wildcard bind (0.0.0.0, ::) the
    page's address is not known in advance, so an origin equal to the request's own Host header
    (`request_host`, same-origin) is allowed; a DNS-rebinding page passes that test but has no
    token cookie, and wildcard binds always require the token. A missing Origin (programs, not
    browsers: browsers always send it on websockets) is allowed here; the token check still
    applies to it on every non-loopback bind.
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    if origin in {o.strip().lower().rstrip("/") for o in extra}:
        return True
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or parts.path or parts.query or parts.fragment:
        return False
    try:
        origin_port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    hostname = parts.hostname or ""
    if origin_port != port:
        return False
    allowed = {"127.0.0.1", "localhost", "::1"}
    if not is_wildcard(host):
        allowed.add(_strip_brackets(host.lower()))
    if hostname in allowed:
        return True
    if is_wildcard(host) and request_host is not None:
        return _hostport(hostname, origin_port) == _normal_host_header(request_host, port)
    return False


def _normal_host_header(value: str, default_port: int) -> str:
    value = value.strip().lower()
    parts = urlsplit("//" + value)
    try:
        port = parts.port or default_port
    except ValueError:
        return ""
    return _hostport(parts.hostname or "", port)


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """Host header values for `TrustedHostMiddleware` (DNS rebinding): the loopback names and
    the bound host. A wildcard bind gives ``["*"]``: the address users type is unknown, and the
    token (required there) is what stops a rebinding page."""
    if is_wildcard(host):
        return ["*"]
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    bound = host.strip().lower()
    if ":" in bound and not bound.startswith("["):
        bound = f"[{bound}]"
    for h in [bound, *extra]:
        if h and h not in hosts:
            hosts.append(h)
    return hosts


# --- checkpoints -----------------------------------------------------------------------------


def resolve_checkpoint(root: Path, name: str) -> Path:
    """The file `name` (relative, e.g. ``"lenet_mnist.pt2"`` or ``"runs/a.pt"``) inside the
    checkpoint folder `root`, resolved. Refuses absolute paths, ``..``, symlinks that lead out
    of `root`, missing files and non-checkpoint suffixes with a one-sentence SecurityError."""
    if not name or not name.strip():
        raise SecurityError("The checkpoint name is empty.")
    if "\x00" in name:
        raise SecurityError("The checkpoint name contains a NUL character.")
    if (
        PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or name.startswith(("\\", "~"))
        or PureWindowsPath(name).drive
    ):
        raise SecurityError(f"Checkpoint {name!r} is an absolute path; give a name in the folder.")
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise SecurityError(f"Checkpoint {name!r} contains '..'; give a name in the folder.")
    base = Path(root).resolve()
    candidate = (base / name).resolve()
    if not candidate.is_relative_to(base):
        raise SecurityError(f"Checkpoint {name!r} leads out of the checkpoint folder.")
    if not candidate.exists():
        raise SecurityError(f"Checkpoint {name!r} does not exist in the checkpoint folder.")
    if not candidate.is_file():
        raise SecurityError(f"Checkpoint {name!r} is not a file.")
    if candidate.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise SecurityError(
            f"Checkpoint {name!r} does not end in one of {', '.join(CHECKPOINT_SUFFIXES)}."
        )
    return candidate


def list_checkpoints(root: Path) -> list[str]:
    """Names (sorted) of the files directly in `root` that `resolve_checkpoint` accepts and
    whose name matches CHECKPOINT_NAME: what the UI's picker may offer and then send back in a
    ``set`` message. Subfolders are not searched (a ``set`` names a plain file)."""
    base = Path(root).resolve()
    if not base.is_dir():
        return []
    names = []
    for path in base.iterdir():
        if not CHECKPOINT_NAME.fullmatch(path.name):
            continue
        try:
            resolve_checkpoint(base, path.name)
        except SecurityError:
            continue
        names.append(path.name)
    return sorted(names)


# --- middleware ------------------------------------------------------------------------------


class SecurityMiddleware:
    """ASGI middleware: refuses HTTP requests without the token (401) and websockets without
    the token or from a foreign Origin (403 at the handshake, before the app sees them).

    Add it outermost but inside `TrustedHostMiddleware`:
    ``app.add_middleware(SecurityMiddleware, auth=auth, host=host, port=port)`` then
    ``app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))``.
    """

    def __init__(
        self,
        app: ASGIApp,
        auth: TokenAuth,
        host: str,
        port: int,
        extra_origins: Sequence[str] = (),
        exempt: Sequence[str] = (LOGIN_PATH,),
    ) -> None:
        self.app = app
        self.auth = auth
        self.host = host
        self.port = port
        self.extra_origins = list(extra_origins)
        self.exempt = set(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope)
            origin = request.headers.get("origin")
            # A foreign page may send simple cross-site POSTs without a CORS preflight (CSRF);
            # the loopback bind has no token to stop them, so the Origin check does.
            if (
                request.method not in _SAFE_METHODS
                and origin is not None
                and not origin_allowed(
                    origin, self.host, self.port, self.extra_origins, request.headers.get("host")
                )
            ):
                await PlainTextResponse("Requests from another site are refused.", status_code=403)(
                    scope, receive, send
                )
                return
            if scope["path"] not in self.exempt and not self.auth.check_http(request):
                await PlainTextResponse(
                    "A token is required; open the login link printed at start.",
                    status_code=401,
                )(scope, receive, send)
                return
        elif scope["type"] == "websocket":
            conn = HTTPConnection(scope)
            origin_ok = origin_allowed(
                conn.headers.get("origin"),
                self.host,
                self.port,
                self.extra_origins,
                request_host=conn.headers.get("host"),
            )
            if not origin_ok or not self.auth.check_websocket(conn):
                # Closing before accept makes the server answer the handshake with 403.
                await receive()  # the websocket.connect event
                await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)
