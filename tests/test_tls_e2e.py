"""TLS for real: the URL form deploy/README.md gives, against a redis-server speaking TLS.

A private CA signs the server's certificate. With ``ssl_cert_reqs=required`` and the
CA, a worker and a producer run a job over TLS (broker, results, batches, cache); a
client that does not trust the CA is refused, in one line.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from producer.demo.localredis import LocalRedis, free_port
from tests.support import run_cli
from tests.support.loopback import LoopbackAPI, Reply
from tests.support.stack import Stack, make_stack

pytestmark = pytest.mark.integration


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                 issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA, and a server certificate for 127.0.0.1 it signed; PEM files in ``folder``."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reqworker test CA")])
    ca_cert = _certificate("reqworker test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("127.0.0.1", key, ca_name, ca_key, ca=False)
    paths = {"ca": folder / "ca.pem", "cert": folder / "redis.pem", "key": folder / "redis.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server on a TLS port (and a plain one, for its own start-up check)."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    tls_port = free_port()
    server = LocalRedis(args=["--tls-port", str(tls_port), "--tls-cert-file", str(pki["cert"]),
                              "--tls-key-file", str(pki["key"]), "--tls-ca-cert-file", str(pki["ca"]),
                              "--tls-auth-clients", "no", "--requirepass", "tls-pw"])
    with server:
        url = (f"rediss://:tls-pw@127.0.0.1:{tls_port}/0"
               f"?ssl_cert_reqs=required&ssl_ca_certs={pki['ca']}")
        yield url, pki["ca"]


@pytest.fixture(scope="module")
def stack(tls_redis: tuple[str, Path], loopback_api: LoopbackAPI,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    loopback_api.script("/tls/one", Reply(json={"over": "tls"}))
    with make_stack(tls_redis[0], loopback_api, tmp_path_factory.mktemp("tls")) as s:
        yield s


def test_a_job_runs_with_everything_over_tls(stack: Stack) -> None:
    worker = stack.worker("tls", concurrency=2)
    try:
        record = stack.run({"api": "fast", "path": "/tls/one", "key": "t"})
        assert record["ok"]
        assert record["body"] == {"over": "tls"}
        second = stack.run({"api": "fast", "path": "/tls/one", "key": "t2"})
        assert second["from_cache"], "the cache is reached over TLS too"
    finally:
        worker.stop()


def test_a_client_that_does_not_trust_the_ca_is_refused_in_one_line(
        stack: Stack, tls_redis: tuple[str, Path]) -> None:
    untrusted = tls_redis[0].split("&ssl_ca_certs=")[0]  # the system's CAs do not know ours
    done = run_cli(dict(stack.env, REQWORKER_REDIS_URL=untrusted), "status", "0" * 32)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "certificate verify failed" in done.stderr, done.stderr
    assert "tls-pw" not in done.stderr
