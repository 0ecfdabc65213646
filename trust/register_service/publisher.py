"""Signed snapshots of the register's serials, signed once each and kept for the snapshot endpoint and feed."""

from __future__ import annotations

from collections import OrderedDict

from trust.register import RegisterDocument
from trust.register_service.store import RegisterStore
from trust.snapshot import PrivateKey, sign_snapshot

_CACHED = 64


class SnapshotPublisher:
    def __init__(self, store: RegisterStore, key: PrivateKey, *, kid: str = "operator") -> None:
        self.store = store
        self.key = key
        self.kid = kid
        self._signed: OrderedDict[int, str] = OrderedDict()

    async def latest(self) -> tuple[int, str]:
        """(serial, compact JWS) of the newest register."""
        return await self.signed(None)

    async def signed(self, serial: int | None) -> tuple[int, str]:
        if serial is not None and serial in self._signed:
            return serial, self._signed[serial]
        serial, text = await self.store.document(serial)
        if serial not in self._signed:
            self._signed[serial] = sign_snapshot(RegisterDocument.model_validate_json(text), self.key, self.kid)
            while len(self._signed) > _CACHED:
                self._signed.popitem(last=False)
        return serial, self._signed[serial]
