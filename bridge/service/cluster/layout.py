"""Which configured source lands in which slot: printed by ``check-config``, used by the runtime."""

from __future__ import annotations

from bridge.delivery.slots import slot_of
from bridge.ingest.plugins import registered
from bridge.ingest.settings import AccountsSection
from bridge.service.settings import BridgeSettings

__all__ = ["describe_layout", "slotted_names"]


def slotted_names(settings: BridgeSettings) -> dict[str, int]:
    """Source name (``okx:main``) → slot, for every enabled account of every stream or poll provider.
    Webhook receivers have no slot: every replica serves them, the transfer key picks the slot."""
    slots = settings.cluster.slots
    names: dict[str, int] = {}
    for plugin in registered():
        section = getattr(settings, plugin.name)
        if plugin.kind != "webhook" and isinstance(section, AccountsSection):
            for account in section.enabled_accounts():
                name = f"{plugin.provider.value}:{account.name}"
                names[name] = slot_of(name, slots)
    return names


def describe_layout(settings: BridgeSettings) -> list[str]:
    cluster = settings.cluster
    placed = ", ".join(f"{name} → {slot}" for name, slot in sorted(slotted_names(settings).items())) or "none"
    return [
        f"  cluster: group {cluster.group_id}, {cluster.slots} slot{'s' if cluster.slots != 1 else ''}, "
        f"transactional ids {cluster.transactional_id(0)}…{cluster.slots - 1}",
        f"  slots: {placed}; webhooks on every replica via {cluster.ingress_topic}",
    ]
