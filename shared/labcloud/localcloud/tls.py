"""HTTPS on loopback for the clients that refuse bearer tokens over plain http (azure-ai-ml, azure-identity).

The local cloud makes its own certificate authority once (with `trustme`) and keeps it in the state folder, so that
a kernel that trusts it keeps trusting it across restarts; the server certificate names 127.0.0.1 and localhost.
`connect("local")` points this kernel's HTTP clients at `ca_bundle()`: the usual public roots (certifi) plus this
CA, so real clouds still verify as before. Nothing outside the kernel, and nothing on this machine, is changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CA_FILE, CERT_FILE, KEY_FILE, BUNDLE_FILE = "ca.pem", "server-cert.pem", "server-key.pem", "ca-bundle.pem"
HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LocalTls:
    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / CA_FILE

    @property
    def bundle(self) -> Path:
        return self.folder / BUNDLE_FILE

    def ensure(self) -> LocalTls:
        """Create the CA, the server certificate and the bundle unless they exist."""
        if not all((self.folder / name).exists() for name in (CA_FILE, CERT_FILE, KEY_FILE, BUNDLE_FILE)):
            self._create()
        return self

    @property
    def server_files(self) -> tuple[Path, Path]:
        """(certificate chain, private key) of the server certificate, for an HTTPS listener."""
        return self.folder / CERT_FILE, self.folder / KEY_FILE

    def _create(self) -> None:
        import certifi
        import trustme

        self.folder.mkdir(parents=True, exist_ok=True)
        authority = trustme.CA(organization_name="Cloud AI Lab local cloud")
        issued = authority.issue_cert(*HOSTS)
        authority.cert_pem.write_to_path(str(self.ca))
        issued.private_key_pem.write_to_path(str(self.folder / KEY_FILE))
        chain = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
        (self.folder / CERT_FILE).write_bytes(chain)
        public_roots = Path(certifi.where()).read_bytes()
        self.bundle.write_bytes(public_roots.rstrip(b"\n") + b"\n" + self.ca.read_bytes())
        (self.folder / KEY_FILE).chmod(0o600)
