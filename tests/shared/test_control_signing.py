"""Signed control: a change is followed only when a trusted key signed it, under the key it was
published for; anything else is refused with a reason, counted, and on a running router
dead-lettered while the policy it follows stays as it was (real broker)."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tandem_router.app import create_app as router_app
from tandem_shared.budget_watch import BudgetWatch
from tandem_shared.control import (
    KILL_SWITCH_KEY,
    KillSwitch,
    budget_change,
    kill_switch_change,
    publish_change,
)
from tandem_shared.control_signing import ControlSigner, ControlTrust
from tandem_shared.envelope import Event, utcnow
from tandem_shared.events import ControlChanged, DeadLetter, PolicyRef
from tandem_shared.kafka import Publisher, make_producer
from tandem_shared.settings import KafkaSettings, RuntimeSettings
from tandem_shared.signing import public_text
from tandem_shared.topics import Topics

from tests.kafka_utils import consume
from tests.policy.factories import POLICY_YAML
from tests.router.test_governance import router_settings
from tests.service_utils import bearer, eventually, running

ADMIN_KEY, DRIFT_KEY, STRANGER = (Ed25519PrivateKey.generate() for _ in range(3))
TRUSTED = f"{public_text(ADMIN_KEY)},{public_text(DRIFT_KEY)}:drift"


def trust(trusted: str = TRUSTED, env: str = "production") -> ControlTrust:
    runtime = RuntimeSettings(
        env=env,  # type: ignore[arg-type]
        jwt_secret="x" * 32,  # type: ignore[arg-type]
        control_trusted_keys=trusted,
    )
    return ControlTrust.from_settings(runtime)


def switch(by: Ed25519PrivateKey | None, **changes: object) -> Event[ControlChanged]:
    event = kill_switch_change(KillSwitch(all=True), "ana")
    if changes:
        event = Event(
            event.id, event.source, event.subject, event.data.model_copy(update=changes), event.time
        )
    return event if by is None else ControlSigner(by).sign_change(event)


def test_a_change_a_trusted_key_signed_is_followed() -> None:
    signed = switch(ADMIN_KEY)
    assert signed.data.key_id == ControlSigner(ADMIN_KEY).key_id
    assert trust().refusal(signed.subject, signed.data) is None


def tampered(event: Event[ControlChanged]) -> ControlChanged:
    return event.data.model_copy(update={"value": {"all": False, "task_types": []}})


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("unsigned", "unsigned"),
        ("stranger", "unknown_key"),
        ("tampered", "bad_signature"),
        ("another key", "bad_signature"),  # a signed change replayed under another key
        ("drift key signing a kill switch", "kind_not_allowed"),
        ("dated ahead", "from_the_future"),
        ("garbage signature", "bad_signature"),
    ],
)
def test_every_other_change_is_refused_with_its_reason(case: str, reason: str) -> None:
    key, data = KILL_SWITCH_KEY, switch(ADMIN_KEY).data
    if case == "unsigned":
        data = switch(None).data
    elif case == "stranger":
        data = switch(STRANGER).data
    elif case == "tampered":
        data = tampered(switch(ADMIN_KEY))
    elif case == "another key":
        key = "policy/active"
    elif case == "drift key signing a kill switch":
        data = switch(DRIFT_KEY).data
    elif case == "dated ahead":
        data = switch(ADMIN_KEY, changed_at=utcnow() + timedelta(hours=1)).data
    elif case == "garbage signature":
        data = data.model_copy(update={"signature": base64.b64encode(b"x" * 64).decode()})
    refused: list[str] = []
    checking = trust()
    checking.on_refused = refused.append
    assert checking.refusal(key, data) == reason
    assert refused == [reason]


def test_a_forged_or_moved_error_budget_verdict_is_refused() -> None:
    """A clinic's "kept" verdict would lift a breach: it is followed only as signed, for the
    clinic it was signed for, by a key trusted for the kind."""
    kept = BudgetWatch(
        task_type="tumor_screening", segment="clinic=north",
        policy=PolicyRef(name="default", version=2), max_error=0.01, confidence=0.95,
        qa_samples=900, errors=1, upper_bound=0.007, breached=False, at=utcnow(),
    )  # fmt: skip
    signed = ControlSigner(ADMIN_KEY).sign_change(budget_change(kept, "tandem/review-api"))
    assert signed.subject == "error-budget/tumor_screening/clinic=north"
    assert trust().refusal(signed.subject, signed.data) is None
    # Replayed under the key of a clinic in breach.
    assert trust().refusal("error-budget/tumor_screening/clinic=south", signed.data) == (
        "bad_signature"
    )
    unsigned = budget_change(kept, "tandem/review-api")
    assert trust().refusal(unsigned.subject, unsigned.data) == "unsigned"
    by_drift_key = ControlSigner(DRIFT_KEY).sign_change(unsigned)
    assert trust().refusal(by_drift_key.subject, by_drift_key.data) == "kind_not_allowed"


def test_development_without_keys_follows_everything_and_production_needs_keys() -> None:
    assert trust("", env="development").refusal(KILL_SWITCH_KEY, switch(None).data) is None
    with pytest.raises(ValueError, match="TANDEM_CONTROL_TRUSTED_KEYS"):
        RuntimeSettings(env="production", jwt_secret="x" * 32)  # type: ignore[arg-type]
    # Keys configured in development: checked there too.
    assert trust(TRUSTED, env="development").refusal(KILL_SWITCH_KEY, switch(None).data)


@pytest.mark.kafka
async def test_a_router_follows_only_signed_control(
    kafka_settings: KafkaSettings, topics: Topics, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(POLICY_YAML)
    settings = router_settings(kafka_settings, policy_file, "router-signed")
    settings.runtime = RuntimeSettings(control_trusted_keys=TRUSTED)
    producer = make_producer(kafka_settings, "attacker")
    await producer.start()
    try:
        async with running(router_app(settings)) as router:
            publisher = Publisher(producer)
            # Anyone with write access: unsigned, a stranger's key, a signed change tampered.
            for forged in (switch(None), switch(STRANGER)):
                await publish_change(publisher, topics, forged, None)
            letters = await consume(kafka_settings.bootstrap_servers, topics.deadletter, 2)
            reasons = sorted(DeadLetter.model_validate_json(r.value).error for r in letters)
            assert reasons == [
                "control change refused: unknown key",
                "control change refused: unsigned",
            ]
            state = (await router.get("/v1/control", headers=bearer("auditor"))).json()
            assert state["kill_switch"] == {"all": False, "task_types": []}
            metrics = (await router.get("/metrics")).text
            for reason in ("unsigned", "unknown_key"):
                line = f'tandem_control_refused_total{{reason="{reason}",service="router"}} 1.0'
                assert line in metrics

            # The admin's key: followed.
            await publish_change(publisher, topics, switch(None), ControlSigner(ADMIN_KEY))

            async def engaged() -> bool:
                state = (await router.get("/v1/control", headers=bearer("auditor"))).json()
                return bool(state["kill_switch"]["all"])

            await eventually(engaged, "the signed kill switch to be followed", timeout=30)
    finally:
        await producer.stop()
