"""The gateway's queue on its own: rounds, what a restart keeps, what leaves and when."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from app.gateway.store import GatewayStore, Round, key
from app.gateway.worker import backoff


def put(store: GatewayStore, series: str, sop: str) -> None:
    store.add_instance(series, sop, lambda f: f.write(sop.encode()))


def test_instances_after_a_round_closed_open_the_next_round(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "1.2.3", "a")
    put(store, "1.2.3", "b")
    put(store, "1.2.3", "b")  # sent again: one file
    (first,) = store.close_stable(0)
    assert first == Round("1.2.3", 1)
    assert [p.read_bytes() for p in store.files(first)] == sorted(
        [b"a", b"b"], key=lambda b: key(b.decode())
    )
    put(store, "1.2.3", "c")
    assert store.close_stable(0) == [Round("1.2.3", 2)]
    assert [p.name for p in store.files(Round("1.2.3", 2))] == [f"{key('c')}.dcm"]
    assert "1.2.3" not in "".join(str(p) for p in tmp_path.rglob("*"))  # hashed names only


def test_a_restart_keeps_everything_and_restarts_the_quiet_time(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "s", "a")
    store.close()
    with sqlite3.connect(tmp_path / "queue.sqlite") as db:  # as if it was down for an hour
        db.execute("UPDATE rounds SET last = last - 3600")
    store = GatewayStore(tmp_path)
    assert store.close_stable(60) == []  # the quiet time counts from the restart
    assert store.close_stable(0) == [Round("s", 1)]
    assert len(store.files(Round("s", 1))) == 1


def test_a_round_leaves_with_its_files_once_every_destination_accepted(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "s", "a")
    (item,) = store.close_stable(0)
    store.segmented(item, {"seg": b"SEG", "sr": b"SR"}, ["PACS@h:104", "https://x/studies"])
    assert store.files(item) == []  # the instances go once the result is on disk
    assert [p.read_bytes() for p in store.result_files(item)] == [b"SEG", b"SR"]  # SEG first
    first, second = store.due_deliveries()
    store.delivery_failed(first, 60)
    assert store.due_deliveries() == [second]  # each destination on its own
    assert store.delivered(second) is False
    assert store.counts() == {"sending": 1, f"to {first.destination}": 1}
    with sqlite3.connect(tmp_path / "queue.sqlite") as db:
        db.execute("UPDATE deliveries SET next = 0")
    (again,) = store.due_deliveries()
    assert store.delivered(again) is True
    assert store.result_files(item) == []
    assert list(store.results.iterdir()) == []
    assert store.counts() == {}


def test_a_refused_round_keeps_its_reason_not_its_instances(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "s", "a")
    (item,) = store.close_stable(0)
    store.keep_result(item, "seg", b"a SEG made before the round was refused")
    store.refused(item, "HTTP 422: slices of two sizes")
    assert store.files(item) == []
    assert store.result_files(item) == []  # nor a result kept of an earlier try
    assert store.due("segmenting") == []
    assert store.counts() == {"refused": 1}


def test_postponed_rounds_wait_and_the_back_off_grows_to_a_minute(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "s", "a")
    (item,) = store.close_stable(0)
    store.postpone(item, 60, "HTTP 503")
    assert store.due("segmenting") == []
    assert [backoff(n) for n in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_each_instance_moves_its_round_quiet_time(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path)
    put(store, "s", "a")
    with sqlite3.connect(tmp_path / "queue.sqlite") as db:  # as if "a" came long ago
        db.execute("UPDATE rounds SET last = last - 3600")
    put(store, "s", "b")  # its quiet time restarts (committed without an fsync of its own)
    assert store.close_stable(60) == []
    with sqlite3.connect(tmp_path / "queue.sqlite") as db:
        db.execute("UPDATE rounds SET last = last - 3600")
    assert store.close_stable(60) == [Round("s", 1)]
    assert len(store.files(Round("s", 1))) == 2
