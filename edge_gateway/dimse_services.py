"""Wiring of the services answered from the cloud archive: Query/Retrieve and Storage Commitment.

``receiver.start`` asks ``for_config`` for them in every process that serves the
DICOM port. They are offered only when ``table_name`` is configured (the box then
needs read access to the index and the bucket; see the README). Activity counters
are published to ``<spool>/dimse/activity-<pid>.json`` for ``edge-gateway status``.
"""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pynetdicom import evt
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from edge_gateway.archive_client import Archive
from edge_gateway.dimse_access import AccessTable
from edge_gateway.query_retrieve import UNCOMPRESSED, Activity, Handler, QueryRetrieve
from edge_gateway.storage_commitment import CommitmentScp

if TYPE_CHECKING:
    from edge_gateway.config import GatewayConfig

FOLDER = "dimse"


class DimseServices:
    """The handlers and presentation contexts of C-FIND/C-MOVE/C-GET and Storage Commitment."""

    def __init__(self, config: GatewayConfig, archive: Archive | None = None) -> None:
        self.config = config
        self.folder = config.spool_dir / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.archive = archive or Archive.from_config(config)
        self.access = AccessTable.from_config(config)
        self.activity = Activity()
        self.query_retrieve = QueryRetrieve(
            self.archive,
            self.access,
            config.ae_title,
            config.max_find_matches,
            self.activity,
            fast_send=config.fast_path,
        )
        self.commitment = CommitmentScp(config, self.access, self.activity)

    def contexts(self) -> list[tuple[str, list[str]]]:
        """(SOP class UID, transfer syntax UIDs) to accept, SCP role."""
        return [*QueryRetrieve.contexts(), (StorageCommitmentPushModel, list(UNCOMPRESSED))]

    def handlers(self) -> list[Handler]:
        """pynetdicom event handlers: C-FIND, C-MOVE, C-GET (PS3.4 Annex C) and N-ACTION (PS3.4 Annex J)."""
        handlers: list[Handler] = [
            (event, self._published_after(handler)) for event, handler in self.query_retrieve.handlers()
        ]
        handlers.append((evt.EVT_N_ACTION, self._n_action))
        # A storage commitment requester's association closing: its reports go on a new one.
        handlers.append((evt.EVT_CONN_CLOSE, self.commitment.association_closed))
        return handlers

    def _n_action(self, event: evt.Event) -> Any:
        try:
            return self.commitment.handle_n_action(event)
        finally:
            self.publish()

    def _published_after(self, handler: Any) -> Any:
        """Run a generator handler, then publish the activity counters."""

        @functools.wraps(handler)  # __wrapped__: retrieve_sender finds move_refusal through it
        def run(event: Any) -> Any:
            try:
                yield from handler(event)
            finally:
                self.publish()

        return run

    def publish(self) -> None:
        """Write this process's counters (after each request: a small file, replaced atomically)."""
        cache = self.archive.cache
        if cache is not None:
            self.activity.counts["retrieve_cache_hits"] = cache.hits
            self.activity.counts["retrieve_cache_misses"] = cache.misses
        path = self.folder / f"activity-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.activity.snapshot(), "written_at": time.time()}))
        os.replace(tmp, path)


def activity_status(spool_dir: Path) -> dict[str, Any]:
    """Counters summed over every process's published file, when each service was last used, and
    the storage commitment requests still waiting for their report.

    Keys: ``find``, ``find_matches``, ``move``, ``move_instances``, ``get``, ``get_instances``,
    ``commit_requests``, ``commit_instances`` and ``*_refused`` / ``*_failed`` / ``*_cancelled``
    counts; ``last_find_at`` (etc.) as Unix times; ``commitments_pending``.
    """
    from edge_gateway.storage_commitment import pending_count

    counts: dict[str, Any] = {}
    last: dict[str, float] = {}
    folder = spool_dir / FOLDER
    for path in sorted(folder.glob("activity-*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        for name, value in data.get("counts", {}).items():
            counts[name] = counts.get(name, 0) + int(value)
        for name, at in data.get("last", {}).items():
            last[name] = max(last.get(name, 0.0), float(at))
    for service in ("find", "move", "get", "commit"):
        counts[f"last_{service}_at"] = last.get(service)
    counts["commitments_pending"] = pending_count(spool_dir)
    return counts
