"""The one place every Kafka client's configuration is made, for both client libraries.

- The stream processors' consume–process–produce loops run on librdkafka (confluent-kafka):
  its transactions are Kafka's reference implementation of exactly-once, and it relays records
  several times faster than aiokafka here.
- Request paths and side jobs (the review API's outbox relay, admin and control changes, the
  audit checkpoints, reading a topic back, the command line) keep aiokafka: one asyncio
  producer there is simpler than a client on a thread of its own.

Every reader of Tandem's topics reads committed records only, so an aborted transaction's
outputs are never seen.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from aiokafka.helpers import create_ssl_context

from tandem_shared.settings import KafkaSettings

# The largest record a service sends: below the broker's default limit (1 MiB and a few bytes)
# with room for the batch framing.
MAX_RECORD_BYTES = 1_000_000
ISOLATION = "read_committed"


def transactional_id(group_id: str, instance_id: str | None) -> str:
    """The transactional id of a loop of ``group_id``. With an instance id (TANDEM_INSTANCE_ID:
    a pod's name, given by the downward API) it is stable, so a restarted container takes its
    old id back and at once fences and aborts what its predecessor left open. Otherwise it is
    unique to this loop (two loops of one group in one process must not fence each other), and
    an open transaction of a dead process holds its partitions' readers until its timeout."""
    if instance_id:
        return f"{group_id}-{instance_id}"
    return f"{group_id}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def librdkafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """TLS and SASL for a librdkafka client, as the settings say; nothing for PLAINTEXT."""
    out: dict[str, Any] = {"security.protocol": kafka.security_protocol.lower()}
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None  # the settings refuse SASL without one
        out |= {
            "sasl.mechanism": kafka.sasl_mechanism,
            "sasl.username": kafka.sasl_username,
            "sasl.password": kafka.sasl_password.get_secret_value(),
        }
    if kafka.tls:
        # The brokers' certificates are checked, names included (librdkafka's default).
        out["ssl.endpoint.identification.algorithm"] = "https"
        if kafka.ssl_cafile is not None:
            out["ssl.ca.location"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile is not None and kafka.ssl_keyfile is not None:
            out["ssl.certificate.location"] = str(kafka.ssl_certfile)
            out["ssl.key.location"] = str(kafka.ssl_keyfile)
            if kafka.ssl_key_password is not None:
                out["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return out


def aiokafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """The same for an aiokafka client."""
    out: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL"):
        assert kafka.sasl_password is not None
        out |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.sasl_username,
            "sasl_plain_password": kafka.sasl_password.get_secret_value(),
        }
    if kafka.tls:
        out["ssl_context"] = create_ssl_context(
            cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None,
            certfile=str(kafka.ssl_certfile) if kafka.ssl_certfile else None,
            keyfile=str(kafka.ssl_keyfile) if kafka.ssl_keyfile else None,
            password=kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    return out


def transactional_consumer(kafka: KafkaSettings, group_id: str, client_id: str) -> dict[str, Any]:
    """A group member whose offsets are committed by its producer's transactions."""
    return {
        **librdkafka_security(kafka),
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": ISOLATION,
        # The broker answers a fetch as soon as it has a record, not after half a second.
        "fetch.wait.max.ms": 50,
        # A member that died (a SIGKILL, a node lost) holds its partitions until the session
        # times out: 10 s rather than 45 before its work moves on. Heartbeats come from the
        # client's own thread, so a busy handler does not miss them.
        "session.timeout.ms": 10_000,
        "enable.partition.eof": False,
    }


def transactional_producer(
    kafka: KafkaSettings, client_id: str, transactional_id: str, transaction_timeout_ms: int
) -> dict[str, Any]:
    """A producer whose sends and the consumer's offsets commit together, or not at all."""
    return {
        **librdkafka_security(kafka),
        "bootstrap.servers": kafka.bootstrap_servers,
        "client.id": client_id,
        "transactional.id": transactional_id,
        # An open transaction of a process that died holds back read_committed readers of its
        # partitions until the broker aborts it: this long at most.
        "transaction.timeout.ms": transaction_timeout_ms,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        # A transaction begun right after the last one committed is refused
        # (CONCURRENT_TRANSACTIONS) until the broker has written the last one's markers, a
        # few milliseconds; the client retries after this backoff. At the default 100 ms every
        # batch waited that long to send its offsets (confluent-kafka-python#967; the Java
        # client retries after 20 ms, KAFKA-5477). Retries of a longer failure still back off,
        # doubling up to retry.backoff.max.ms (1 s).
        "retry.backoff.ms": 5,
        # The Java client's and aiokafka's partitioner: a key lands on the same partition
        # number whichever client wrote it, so a task's events stay in step across topics.
        "partitioner": "murmur2_random",
        "message.max.bytes": 1_048_576,
        # No re-bootstrap when every broker is down (a broker restart on one node, an outage
        # of the cluster): re-bootstrapping decommissions the known brokers, and librdkafka
        # keeps a decommissioned one cached as the group's coordinator, so the next
        # send_offsets_to_transaction waits for it for ever, whatever its timeout
        # (confluentinc/librdkafka#5511, #5456). The brokers keep their addresses; the
        # client reconnects to them as they come back.
        "metadata.recovery.strategy": "none",
    }


def state_reader(kafka: KafkaSettings) -> dict[str, Any]:
    """A consumer that reads assigned partitions of a changelog to their end, committing
    nothing: it tells when it reached each partition's end."""
    return {
        **librdkafka_security(kafka),
        "bootstrap.servers": kafka.bootstrap_servers,
        "group.id": "tandem-state-reader",  # required by the client; never joined or committed
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": ISOLATION,
        "enable.partition.eof": True,
    }


def aiokafka_producer(kafka: KafkaSettings, client_id: str) -> dict[str, Any]:
    """Keyword arguments of an idempotent AIOKafkaProducer (acks from every replica)."""
    return {
        **aiokafka_security(kafka),
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
    }


def aiokafka_reader(bootstrap_servers: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments of an AIOKafkaConsumer that reads committed records, without
    committing offsets of its own. TLS and SASL come from the environment's settings."""
    return {
        **aiokafka_security(KafkaSettings(bootstrap_servers=bootstrap_servers)),
        "bootstrap_servers": bootstrap_servers,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": ISOLATION,
        **extra,
    }


def aiokafka_admin(bootstrap_servers: str) -> dict[str, Any]:
    """Keyword arguments of an AIOKafkaAdminClient; TLS and SASL from the environment."""
    kafka = KafkaSettings(bootstrap_servers=bootstrap_servers)
    return {**aiokafka_security(kafka), "bootstrap_servers": bootstrap_servers}
