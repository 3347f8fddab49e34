"""Throwaway CURVE certificates for local clusters: one pair per node, one shared allow directory.

:class:`ClusterKeys` is what ``LocalCluster(curve=True)``, ``superline-zmq cluster
--curve`` and the demo use; a test uses it to play an operator::

    keys = cluster.keys
    intruder = keys.cert("intruder", allow=False)   # a key pair nobody lists
    await cluster.add_node(0, cert=intruder, wait=False)
    keys.allow("intruder")                           # now list it ...
    await cluster.reload_all()                       # ... and SIGHUP every node

Everything lives in one directory (a new temporary one unless ``root`` is given):
``certs/NAME.key`` and ``certs/NAME.key_secret`` for each name, and ``allow/NAME.key``
for each name allowed. Real deployments keep one allow directory per host; sharing one
here is what makes "add everywhere" a single file copy.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class ClusterKeys:
    """A directory of CURVE certificates and the allow directory every local node reads (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self._owned = root is None
        #: The directory holding everything (removed by :meth:`cleanup` if this object made it).
        self.root = Path(tempfile.mkdtemp(prefix="superline-keys-")) if root is None else Path(root)
        #: Where every certificate pair is written.
        self.certs = self.root / "certs"
        #: The allow directory every node of the cluster is started with (``--curve-allow``).
        self.allow_dir = self.root / "allow"
        self.certs.mkdir(parents=True, exist_ok=True)
        self.allow_dir.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"<ClusterKeys {self.root}: {sorted(p.stem for p in self.allow_dir.glob('*.key'))} allowed>"

    def cert(self, name: str, *, allow: bool = True) -> Path:
        """The secret certificate ``NAME.key_secret`` (made if missing); with ``allow``, also listed as allowed."""
        from superline_zmq.curve import write_certificate

        secret = self.certs / f"{name}.key_secret"
        if not secret.exists():
            write_certificate(name, self.certs)
        if allow:
            self.allow(name)
        return secret

    def public_key(self, name: str) -> bytes:
        """``name``'s public key (Z85)."""
        from superline_zmq.curve import read_allow_dir

        with tempfile.TemporaryDirectory() as tmp:  # read it exactly as an allow directory would be
            shutil.copy(self.certs / f"{name}.key", tmp)
            (key,) = read_allow_dir(tmp)
        return key

    def allow(self, name: str) -> None:
        """List ``name``'s public key in the allow directory (nodes admit it after their next reload)."""
        shutil.copy(self.certs / f"{name}.key", self.allow_dir / f"{name}.key")

    def revoke(self, name: str) -> None:
        """Remove ``name``'s public key from the allow directory (nodes drop it at their next reload)."""
        (self.allow_dir / f"{name}.key").unlink(missing_ok=True)

    @property
    def allowed(self) -> list[str]:
        """Names listed in the allow directory, sorted."""
        return sorted(p.stem for p in self.allow_dir.glob("*.key"))

    def cleanup(self) -> None:
        """Remove the directory, if this object created it; idempotent."""
        if self._owned:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ClusterKeys:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


__all__ = ["ClusterKeys"]
