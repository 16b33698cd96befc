"""The emulator's on-disk store: reload, pagination, expiry, interrupted moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batch_provider.emulator import ids
from airflow_batch_provider.emulator.errors import APIError
from airflow_batch_provider.emulator.store import Store


def add(store: Store, tmp_path: Path, name: str, purpose: str = "batch", expires_at=None) -> dict:
    source = tmp_path / f"src-{name}"
    source.write_bytes(b"{}\n")
    return store.add_file(source, filename=name, purpose=purpose, expires_at=expires_at)


def test_files_and_batches_survive_a_reload(tmp_path: Path):
    store = Store(tmp_path / "data")
    obj = add(store, tmp_path, "a.jsonl")
    store.add_batch({"id": "batch_1", "status": "in_progress"}, {"offset": 10})
    (store.tmp_dir / "upload-leftover").write_bytes(b"x")
    again = Store(tmp_path / "data")
    assert again.get_file(obj["id"]) == obj
    assert again.get_batch("batch_1").state == {"offset": 10}
    assert not list(again.tmp_dir.iterdir())  # half uploads are dropped
    assert add(again, tmp_path, "b.jsonl")["id"] != obj["id"]


def test_listing_order_filter_and_cursor(tmp_path: Path):
    store = Store(tmp_path)
    made = [
        add(store, tmp_path, f"{i}.jsonl", purpose="batch" if i % 2 else "user_data")["id"] for i in range(5)
    ]
    page, more = store.list_files(purpose=None, after=None, limit=2, order="desc")
    assert [f["id"] for f in page] == made[::-1][:2] and more
    page, more = store.list_files(purpose=None, after=page[-1]["id"], limit=10, order="desc")
    assert [f["id"] for f in page] == made[::-1][2:] and not more
    page, _ = store.list_files(purpose="batch", after=None, limit=10, order="asc")
    assert [f["id"] for f in page] == [made[1], made[3]]
    assert store.list_files(purpose=None, after="file-unknown", limit=10, order="asc") == ([], False)


def test_expired_files_disappear(tmp_path: Path):
    store = Store(tmp_path)
    obj = add(store, tmp_path, "old.jsonl", expires_at=ids.now() - 1)
    with pytest.raises(APIError) as err:
        store.get_file(obj["id"])
    assert err.value.status == 404
    assert not store.file_path(obj["id"]).exists()


def test_add_file_completes_an_interrupted_move(tmp_path: Path):
    store = Store(tmp_path)
    store.file_path("file-x").write_bytes(b"done\n")  # moved before a crash, metadata never written
    obj = store.add_file(
        tmp_path / "gone", filename="o.jsonl", purpose="batch_output", expires_at=None, file_id="file-x"
    )
    assert obj["bytes"] == 5 and store.has_file("file-x")
