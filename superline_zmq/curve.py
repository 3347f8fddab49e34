"""CURVE keys for the cluster transport: who a node is, and which nodes it lets in.

ZeroMQ's CURVE mechanism (CurveZMQ, RFC 26: a Curve25519 key exchange, then every
command and message boxed with XSalsa20-Poly1305) secures each connection between two
nodes. A connecting socket must know the listening node's *public* key in advance and
proves it holds a key pair of its own; the listening node asks its ZAP handler (RFC 27)
whether that client key is allowed. The ZeroMQ adapter (``zeromq_adapter(curve=...)``)
makes every socket of a node a CURVE socket: its ROUTER and XPUB as servers, its SUB and
DEALERs as clients; see :mod:`superline_zmq.adapters.zeromq`.

A :class:`CurveConfig` holds one node's key pair and its *allow list*, the public keys
of the nodes it admits. Keys are Z85 text, 40 characters, as ``zmq.curve_keypair()``
makes them. Certificate files are pyzmq's (``zmq.auth.create_certificates``, and
``superline-zmq keygen``): ``NAME.key`` holds the public key, ``NAME.key_secret`` both;
an allow directory holds ``*.key`` files, public certificates only. Logs name a key by
its :func:`fingerprint`, the first eight characters of its Z85 form, so an operator can
grep the allow directory for it.

The ZAP side is pyzmq's own asyncio authenticator
(:class:`zmq.auth.asyncio.AsyncioAuthenticator`), configured with
``configure_curve_callback`` and an :class:`AllowList` as its credentials provider, so the
list can change at run time (:meth:`ZeroMQAdapter.reload_allowed
<superline_zmq.adapters.zeromq.ZeroMQAdapter.reload_allowed>`). Note libzmq's rule: a
CURVE server whose context has no ZAP handler admits *every* client key (the
"Stonehouse" pattern), so :class:`ZapHandler` must run before the first bind and stop
only after the last server socket is closed; the adapter does it in that order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import zmq
import zmq.asyncio
from zmq.auth import create_certificates, load_certificate
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from superline_zmq.errors import CurveKeyError

log = logging.getLogger("superline_zmq.curve")

#: A key in Z85 text, as ``str`` or ``bytes`` (40 characters).
KeyLike: TypeAlias = str | bytes
#: ``allowed=``: public keys, or a directory of ``*.key`` certificate files.
AllowedLike: TypeAlias = "Iterable[KeyLike] | str | os.PathLike[str]"

#: Length of a CURVE key in Z85 text.
Z85_KEY_LEN = 40
#: Characters of the Z85 public key a fingerprint shows.
FINGERPRINT_LEN = 8
#: ZAP domains of a node's two listening sockets (what the refusal logs name).
ROUTER_DOMAIN = "superline.router"
PUB_DOMAIN = "superline.pub"


def fingerprint(key: KeyLike) -> str:
    """A short name of a public key for logs: its first eight Z85 characters (grep the allow directory for it)."""
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    return text[:FINGERPRINT_LEN]


def parse_key(value: object, what: str, *, secret: bool = False) -> bytes:
    """``value`` as a Z85 key in bytes; :class:`~superline_zmq.errors.CurveKeyError` naming ``what`` if it is not one.

    A secret key's value never appears in the error.
    """
    if isinstance(value, str):
        raw = value.strip().encode("ascii", "replace")
    elif isinstance(value, bytes | bytearray):
        raw = bytes(value).strip()
    else:
        raise CurveKeyError(f"{what} must be a Z85 key as str or bytes, got {type(value).__name__}")
    shown = "" if secret else f" ({raw[:48]!r})"
    if len(raw) != Z85_KEY_LEN:
        hint = " (that is a raw 32-byte key: pass z85.encode(key))" if len(raw) == 32 else ""
        raise CurveKeyError(
            f"{what} must be {Z85_KEY_LEN} Z85 characters as zmq.curve_keypair() makes them, "
            f"got {len(raw)}{shown}{hint}"
        )
    try:
        decoded = z85.decode(raw)
    except (ValueError, KeyError, IndexError):
        raise CurveKeyError(f"{what} is not valid Z85 text{shown}") from None
    if len(decoded) != 32:  # pragma: no cover - 40 Z85 characters always decode to 32 bytes
        raise CurveKeyError(f"{what} does not decode to a 32-byte key")
    return raw


def read_allow_dir(directory: str | os.PathLike[str]) -> frozenset[bytes]:
    """The public keys of every ``*.key`` certificate in ``directory`` (pyzmq's format).

    Raises :class:`~superline_zmq.errors.CurveKeyError` if the directory is missing or a
    file holds no valid public key: a reload never applies half a directory. A ``.key``
    file that also holds a secret key is read, with a warning (allow directories are
    meant for public certificates only).
    """
    path = Path(directory)
    if not path.is_dir():
        raise CurveKeyError(f"the allow directory {str(path)!r} does not exist or is not a directory")
    keys: set[bytes] = set()
    for file in sorted(path.glob("*.key")):
        try:
            public, secret = load_certificate(file)
        except (OSError, ValueError) as exc:
            raise CurveKeyError(f"cannot read the public certificate {str(file)!r}: {exc}") from exc
        keys.add(parse_key(public, f"the public key in {str(file)!r}"))
        if secret:
            log.warning(
                "%s holds a secret key: an allow directory should hold public certificates (NAME.key) only", file
            )
    return frozenset(keys)


def resolve_allowed(allowed: AllowedLike) -> tuple[frozenset[bytes], Path | None]:
    """``allowed=`` as a set of keys, with the directory it came from (None for a collection of keys).

    A ``str`` or a path is a directory; any other iterable holds keys. Raises
    :class:`~superline_zmq.errors.CurveKeyError`.
    """
    if isinstance(allowed, str | os.PathLike):
        directory = Path(allowed)
        return read_allow_dir(directory), directory
    if isinstance(allowed, bytes | bytearray):
        raise CurveKeyError("allowed= takes a collection of keys or a directory, not a single key (wrap it in a list)")
    try:
        items = list(allowed)
    except TypeError:
        raise CurveKeyError(f"allowed= must be keys or a directory, got {type(allowed).__name__}") from None
    return frozenset(parse_key(k, f"allowed[{i}]") for i, k in enumerate(items)), None


class CurveConfig:
    """One node's CURVE key pair and the public keys of the nodes it admits (see the module docstring).

    ``public_key``/``secret_key``: Z85, ``str`` or ``bytes`` (``zmq.curve_keypair()``); the
    public key must be the secret key's. ``allowed``: a collection of public keys, or a
    directory of ``*.key`` files (then :meth:`read_allowed` re-reads it, which is what
    ``adapter.reload_allowed()`` and ``SIGHUP`` do). The node's own key need not be
    listed. Raises :class:`~superline_zmq.errors.CurveKeyError` (a ``ValueError``) on a
    malformed key, a mismatched pair or an unreadable directory, and ``RuntimeError`` if
    this libzmq was built without CURVE. The secret key is never shown in ``repr`` or
    errors.
    """

    __slots__ = ("_secret", "allow_dir", "allowed", "public_key")

    def __init__(self, public_key: KeyLike, secret_key: KeyLike, allowed: AllowedLike = ()) -> None:
        if not zmq.has("curve"):
            raise RuntimeError("this libzmq was built without CURVE (libsodium); cannot secure the cluster transport")
        #: This node's public key (Z85 bytes): what peers connect to it with and list to admit it.
        self.public_key = parse_key(public_key, "public_key")
        self._secret = parse_key(secret_key, "secret_key", secret=True)
        if zmq.curve_public(self._secret) != self.public_key:
            raise CurveKeyError("public_key is not the public half of secret_key (mixed up two key pairs?)")
        keys, directory = resolve_allowed(allowed)
        #: The public keys admitted when the adapter starts (Z85 bytes).
        self.allowed: frozenset[bytes] = keys
        #: The directory ``allowed`` came from, re-read on reload (None: a fixed collection).
        self.allow_dir: Path | None = directory

    @classmethod
    def from_files(cls, cert_file: str | os.PathLike[str], allow_dir: str | os.PathLike[str]) -> CurveConfig:
        """Read a pyzmq secret certificate (``NAME.key_secret``) and an allow directory of ``*.key`` files."""
        try:
            public, secret = load_certificate(cert_file)
        except (OSError, ValueError) as exc:
            raise CurveKeyError(f"cannot read the certificate {os.fspath(cert_file)!r}: {exc}") from exc
        if not secret:
            raise CurveKeyError(
                f"{os.fspath(cert_file)!r} holds no secret key: pass this node's NAME.key_secret file, "
                "not its public NAME.key"
            )
        return cls(public, secret, Path(allow_dir))

    @property
    def secret_key(self) -> bytes:
        """This node's secret key (Z85 bytes). Keep it out of logs."""
        return self._secret

    @property
    def fingerprint(self) -> str:
        """This node's public key, shortened for logs (:func:`fingerprint`)."""
        return fingerprint(self.public_key)

    def read_allowed(self, allowed: AllowedLike | None = None) -> tuple[frozenset[bytes], Path | None]:
        """The allow list now: ``allowed`` if given (keys or a directory), else the allow directory re-read.

        Returns the keys and the directory they came from. Raises
        :class:`~superline_zmq.errors.CurveKeyError` (``ValueError`` when there is no
        directory to re-read and nothing was given).
        """
        if allowed is not None:
            return resolve_allowed(allowed)
        if self.allow_dir is None:
            raise CurveKeyError("this CurveConfig has a fixed list of keys and no allow directory: pass the new keys")
        return read_allow_dir(self.allow_dir), self.allow_dir

    def __repr__(self) -> str:
        source = f"allow_dir={str(self.allow_dir)!r}" if self.allow_dir is not None else "allowed=[...]"
        return f"CurveConfig(public_key={self.public_key.decode()!r}, {source}, {len(self.allowed)} keys allowed)"


def write_certificate(name: str, directory: str | os.PathLike[str] = ".") -> tuple[Path, Path]:
    """Write a new pyzmq certificate pair ``NAME.key`` (public) and ``NAME.key_secret`` into ``directory``.

    The secret file is created readable by its owner only (mode 0600), the public one
    0644. Refuses (``FileExistsError``) to overwrite either, and ``ValueError`` for a
    name that is not a plain file name. Returns ``(public_path, secret_path)``.
    """
    if not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name):
        raise ValueError(f"the certificate name must be a plain file name, got {name!r}")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} already exists; not overwriting a key (remove it first)")
    old = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        create_certificates(folder, name)
    finally:
        os.umask(old)
    public.chmod(0o644)
    return public, secret


# ---------------------------------------------------------------------- the ZAP side
@dataclass
class AllowList:
    """The ZAP credentials provider: which client keys a node admits right now.

    pyzmq's authenticator calls :meth:`callback` with every CURVE handshake's client key.
    ``on_refused(domain, key, address)`` hears every refusal (the adapter counts and logs
    it); ``admitted`` collects the keys admitted since it was last cleared, so a reload
    knows whether a removed key may still hold a connection. Never raises: an exception
    here would stop pyzmq's ZAP loop and with it every handshake.
    """

    keys: frozenset[bytes]
    on_refused: Callable[[str, bytes, str], None] | None = None
    #: Keys ZAP admitted since the adapter last re-created its listeners.
    admitted: set[bytes] = field(default_factory=set)
    #: The address of the handshake being decided (set by :class:`ZapHandler`).
    asking: str = ""
    allowed_count: int = 0
    refused_count: int = 0

    def callback(self, domain: str, key: bytes) -> bool:
        try:
            if key in self.keys:
                self.allowed_count += 1
                self.admitted.add(key)
                return True
            self.refused_count += 1
            if self.on_refused is not None:
                self.on_refused(domain, key, self.asking)
        except Exception:  # never let the ZAP loop die
            log.exception("the CURVE allow list failed; refusing the handshake")
        return False


class ZapHandler(AsyncioAuthenticator):
    """pyzmq's asyncio ZAP authenticator, admitting the CURVE keys of an :class:`AllowList`.

    The only additions: the address of each request is handed to the allow list (for
    the refusal log), and :meth:`aclose` waits for pyzmq's ZAP task to finish, so
    closing leaves nothing running. Start it (:meth:`start`) before binding any CURVE
    server socket on ``context``: libzmq admits every key when no handler is bound.
    """

    def __init__(self, context: zmq.asyncio.Context, allow: AllowList, domains: Collection[str]) -> None:
        super().__init__(context, log=logging.getLogger("superline_zmq.zap"))
        self.allow_list = allow
        self._domains = tuple(domains)

    def start(self) -> None:
        """Bind the context's ZAP endpoint and start answering; ``ValueError`` if another handler holds it."""
        try:
            super().start()
        except zmq.ZMQError as exc:
            if exc.errno == zmq.EADDRINUSE:
                raise ValueError(
                    "another ZAP handler already runs on this ZeroMQ context: give each CURVE adapter a context "
                    "of its own (leave context= unset)"
                ) from exc
            raise
        for domain in self._domains:
            self.configure_curve_callback(domain, credentials_provider=self.allow_list)

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.allow_list.asking = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        try:
            await super().handle_zap_message(msg)
        finally:
            self.allow_list.asking = ""

    async def aclose(self) -> None:
        """Stop answering and wait for pyzmq's ZAP task to end (call after closing the server sockets)."""
        task: Any = getattr(self, "_AsyncioAuthenticator__task", None)  # pyzmq keeps it private
        self.stop()
        if isinstance(task, asyncio.Future) and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 1.0)


__all__ = [
    "FINGERPRINT_LEN",
    "PUB_DOMAIN",
    "ROUTER_DOMAIN",
    "Z85_KEY_LEN",
    "AllowList",
    "CurveConfig",
    "CurveKeyError",
    "ZapHandler",
    "fingerprint",
    "parse_key",
    "read_allow_dir",
    "resolve_allowed",
    "write_certificate",
]
