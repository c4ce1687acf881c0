"""TLS and SASL against the real broker, started with a SASL_SSL listener (SCRAM-SHA-512 and
PLAIN) and an SSL listener that requires client certificates, with a CA the test makes: the
router routes a task over SASL_SSL (librdkafka transactions, aiokafka reads and writes, topic
creation), and a client without credentials, with a wrong password or a wrong CA, or without a
client certificate is refused."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tandem_cli.stack.kafka import BrokerSecurity, KafkaBroker
from tandem_cli.stack.process import free_port
from tandem_router.app import create_app as router_app
from tandem_shared import clients
from tandem_shared.envelope import Event
from tandem_shared.events import TaskRouted
from tandem_shared.kafka import Outgoing, Publisher, make_producer
from tandem_shared.settings import KafkaSettings
from tandem_shared.topics import Topics, ensure_topics

from tests.kafka_utils import consume
from tests.policy.factories import POLICY_YAML, scored
from tests.router.test_governance import router_settings
from tests.service_utils import running

pytestmark = pytest.mark.kafka
USERS = {"router": "router-secret-1", "admin": "admin-secret-2"}
ECDSA = ec.SECP256R1()


@dataclass
class Authority:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def make(cls, name: str) -> Authority:
        key = ec.generate_private_key(ECDSA)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert)

    def issue(self, name: str, server: bool) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ECDSA)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = _builder(subject, self.cert.subject, key).add_extension(
            x509.ExtendedKeyUsage([usage]), critical=False
        )
        if server:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return key, builder.sign(self.key, hashes.SHA256())


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )


def pem(*items: ec.EllipticCurvePrivateKey | x509.Certificate) -> bytes:
    out = b""
    for item in items:
        if isinstance(item, x509.Certificate):
            out += item.public_bytes(serialization.Encoding.PEM)
        else:
            out += item.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
    return out


def secured_broker(
    home: Path, authority: Authority, users: dict[str, str], authorize: bool = False
) -> KafkaBroker:
    """A broker started with SASL_SSL and mutual-TLS listeners that present a certificate
    ``authority`` issued (its CA written to ``home``/ca.pem, for clients and client
    certificates alike)."""
    key, cert = authority.issue("broker", server=True)
    (home / "keystore.pem").write_bytes(pem(key, cert, authority.cert))
    (home / "ca.pem").write_bytes(pem(authority.cert))
    security = BrokerSecurity(
        sasl_ssl_port=free_port(),
        ssl_port=free_port(),
        keystore=home / "keystore.pem",
        truststore=home / "ca.pem",
        users=users,
        authorize=authorize,
    )
    broker = KafkaBroker(
        home / "broker", port=free_port(), controller_port=free_port(), security=security
    )
    broker.start()
    return broker


@dataclass
class Secured:
    broker: KafkaBroker
    security: BrokerSecurity
    ca: Path
    other_ca: Path
    client_cert: Path
    client_key: Path

    def settings(self, **changes: object) -> KafkaSettings:
        base: dict[str, object] = {
            "bootstrap_servers": f"127.0.0.1:{self.security.sasl_ssl_port}",
            "topic_prefix": f"s{uuid.uuid4().hex[:8]}.",
            "security_protocol": "SASL_SSL",
            "sasl_username": "router",
            "sasl_password": USERS["router"],
            "ssl_cafile": self.ca,
        }
        return KafkaSettings(**(base | changes))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    home = tmp_path_factory.mktemp("secured-kafka")
    authority, stranger = Authority.make("tandem test CA"), Authority.make("another CA")
    client_key, client_cert = authority.issue("router", server=False)
    files = {
        "other-ca.pem": pem(stranger.cert),
        "client.pem": pem(client_cert),
        "client.key": pem(client_key),
    }
    for name, content in files.items():
        (home / name).write_bytes(content)
    broker = secured_broker(home, authority, USERS)
    assert broker.security is not None
    try:
        yield Secured(
            broker,
            broker.security,
            home / "ca.pem",
            home / "other-ca.pem",
            home / "client.pem",
            home / "client.key",
        )
    finally:
        broker.stop()


def reaches(kafka: KafkaSettings) -> bool:
    """Whether a librdkafka client with these settings gets the cluster's metadata."""
    config = clients.librdkafka_security(kafka) | {"bootstrap.servers": kafka.bootstrap_servers}
    producer = Producer(config | {"log_level": 0})
    try:
        producer.list_topics(timeout=5)
        return True
    except KafkaException:
        return False


def test_clients_are_refused_without_the_right_credentials_or_ca(secured: Secured) -> None:
    assert reaches(secured.settings())
    assert not reaches(secured.settings(sasl_password="wrong"))
    assert not reaches(secured.settings(ssl_cafile=secured.other_ca))  # the broker is unknown
    assert not reaches(secured.settings(security_protocol="SSL"))  # no SASL: no handshake
    plain = {"sasl_mechanism": "PLAIN", "sasl_username": "admin"}
    assert reaches(secured.settings(**plain, sasl_password=USERS["admin"]))
    assert not reaches(secured.settings(**plain))  # with the router's password


def test_mutual_tls_needs_a_client_certificate_the_ca_signed(secured: Secured) -> None:
    mutual = {
        "bootstrap_servers": f"127.0.0.1:{secured.security.ssl_port}",
        "security_protocol": "SSL",
    }
    with_cert = secured.settings(
        **mutual, ssl_certfile=secured.client_cert, ssl_keyfile=secured.client_key
    )
    assert reaches(with_cert)
    assert not reaches(secured.settings(**mutual))


def test_settings_refuse_what_would_leak_or_cannot_connect() -> None:
    with pytest.raises(ValueError, match="SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="over SASL_SSL only"):
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="PLAIN",
            sasl_username="x",
            sasl_password="y",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="both"):
        KafkaSettings(security_protocol="SSL", ssl_certfile=Path("client.pem"))


async def test_the_router_routes_over_sasl_ssl(
    secured: Secured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = secured.settings()
    # As a deployment sets them: every client of the process reads the environment.
    for name, value in {
        "BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "SECURITY_PROTOCOL": "SASL_SSL",
        "SASL_USERNAME": "router",
        "SASL_PASSWORD": USERS["router"],
        "SSL_CAFILE": str(secured.ca),
    }.items():
        monkeypatch.setenv(f"TANDEM_KAFKA_{name}", value)
    topics = Topics(kafka.topic_prefix)
    assert topics.scored in await ensure_topics(kafka.bootstrap_servers, topics)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_YAML)
    settings = router_settings(kafka, policy, "router-sasl")
    producer = make_producer(kafka, "producer")
    await producer.start()
    try:
        async with running(router_app(settings)):
            task = scored("over-tls", confidence=0.5)
            event = Event.derived(task, source="tandem/scoring", subject="over-tls", stage="s")
            await Publisher(producer).publish([Outgoing(topics.scored, event)])
            [record] = await consume(kafka.bootstrap_servers, topics.routed, 1, timeout=60)
    finally:
        await producer.stop()
    assert TaskRouted.model_validate_json(record.value).task.task_id == "over-tls"


def test_every_client_configuration_carries_the_security_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secure = {"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"}
    for name, value in secure.items():  # the aiokafka readers and admin read the environment
        monkeypatch.setenv(f"TANDEM_KAFKA_{name.upper()}", value)
    kafka = KafkaSettings()
    librdkafka = [
        clients.transactional_consumer(kafka, "g", "c"),
        clients.transactional_producer(kafka, "c", "t", 10_000),
        clients.state_reader(kafka),
    ]
    aiokafka = [
        clients.aiokafka_producer(kafka, "c"),
        clients.aiokafka_reader(kafka.bootstrap_servers),
        clients.aiokafka_admin(kafka.bootstrap_servers),
    ]
    assert [c["security.protocol"] for c in librdkafka] == ["sasl_ssl"] * 3
    assert all(c["sasl.username"] == "u" for c in librdkafka)
    assert [c["security_protocol"] for c in aiokafka] == ["SASL_SSL"] * 3
    assert all(c["ssl_context"] is not None for c in aiokafka)
