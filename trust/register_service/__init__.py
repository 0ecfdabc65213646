"""The operator's register service: the register's storage and history, the signed snapshot and change feed
nodes follow, the public keurmerkregister page, the operator console, and the `edugate register` CLI.

    store = await RegisterStore.open("var/register.sqlite")   # or a postgresql:// DSN
    await store.set_participant_status(oin, ParticipantStatus.SUSPENDED, reason="...", actor="alice")
    app = create_app(store, load_or_create(Path("var/operator-key.pem")))
"""

from trust.register_service.accounts import Operator, OperatorAccounts, OperatorRole
from trust.register_service.app import create_app
from trust.register_service.keys import load_or_create, public_pem
from trust.register_service.store import HistoryEntry, RegisterChangeRefused, RegisterStore

__all__ = [
    "HistoryEntry",
    "Operator",
    "OperatorAccounts",
    "OperatorRole",
    "RegisterChangeRefused",
    "RegisterStore",
    "create_app",
    "load_or_create",
    "public_pem",
]
