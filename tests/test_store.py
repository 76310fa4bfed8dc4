"""SQLite job store and the local blob store of result and input images."""
from __future__ import annotations

import pytest

from bridge.storage import BlobNotFound
from bridge.storage.local import LocalBlobs
from bridge.store import Job, Store, check_id, input_key, output_key


def job(i: int, **kw) -> Job:
    return Job(id=f"j{i}", workflow=kw.pop("workflow", "txt2img"), workflow_version=1, params={"seed": i},
               created_at=1000.0 + i, **kw)


def test_round_trip_every_field(tmp_path):
    s = Store(tmp_path)
    j = job(1, status="completed", progress=100.0, step=3, steps=3, started_at=1001.5, finished_at=1003.0,
            backend="http://b", prompt_id="p-1", error=None, outputs={"images": ["outputs/j1/images_0.png"],
                                                                     "colors": [[1, 2]]},
            meta={"dialect": "a1111", "nested": {"x": [1, None]}}, inputs={"image": "inputs/j1/image.png"},
            attempts=2, timeout=30.0)
    s.save(j)
    s.close()
    again = Store(tmp_path).load("j1")
    assert again == j
    assert again.to_dict()["outputs"] == j.outputs and "inputs" not in again.to_dict()


def test_query_filters_order_and_counts(tmp_path):
    s = Store(tmp_path)
    for i in range(6):
        s.save(job(i, status="completed" if i % 2 else "queued", workflow="img2img" if i < 2 else "txt2img",
                   started_at=1000.0 + i if i % 2 else None, finished_at=1002.0 + i if i % 2 else None))
    assert [j.id for j in s.query()] == ["j5", "j4", "j3", "j2", "j1", "j0"]
    assert [j.id for j in s.query(status="queued")] == ["j4", "j2", "j0"]
    assert [j.id for j in s.query(workflow="img2img")] == ["j1", "j0"]
    assert [j.id for j in s.query(limit=2, offset=1)] == ["j4", "j3"]
    assert [j.id for j in s.unfinished()] == ["j0", "j2", "j4"]  # oldest first: re-submitted in order
    assert s.counts() == {"queued": 3, "running": 0, "completed": 3, "failed": 0, "cancelled": 0}
    assert s.duration_stats() == (3, 6.0)
    s.save(job(4, status="failed"))  # an update replaces the row
    assert s.counts()["failed"] == 1 and s.counts()["queued"] == 2


def test_client_id_survives_reopen(tmp_path):
    first = Store(tmp_path).client_id()
    assert first == Store(tmp_path).client_id()
    assert first != Store(tmp_path / "other").client_id()


@pytest.mark.asyncio
async def test_blobs_stay_inside_the_data_dir(tmp_path):
    blobs = LocalBlobs(tmp_path)
    key = output_key("j1", "images", 0)
    await blobs.put(key, b"\x89PNGdata")
    assert key == "outputs/j1/images_0.png" and await blobs.get(key) == b"\x89PNGdata"
    await blobs.put(input_key("j1", "mask"), b"m")
    assert await blobs.get(input_key("j1", "mask")) == b"m"
    assert await blobs.delete_prefix("inputs/j1/") == 1
    assert not (tmp_path / "inputs" / "j1").exists() and (tmp_path / key).exists()
    assert output_key("j1", "../../evil", 0).startswith("outputs/j1/")
    for bad in ("../outside.png", "/etc/passwd", "a//b", "outputs/../x"):
        with pytest.raises(ValueError):
            await blobs.get(bad)
    with pytest.raises(BlobNotFound):
        await blobs.get("outputs/j1/none.png")
    assert [b.key async for b in blobs.list("outputs/")] == [key]
    for bad in ("../x", "a/b", "", ".", "x" * 200):
        with pytest.raises(ValueError):
            check_id(bad)
    with pytest.raises(ValueError):
        output_key("../x", "images", 0)


@pytest.mark.asyncio
async def test_concurrent_writers_of_one_key_never_clash(tmp_path):
    import asyncio

    blobs = LocalBlobs(tmp_path)
    await asyncio.gather(*(blobs.put("inputs/j/a.png", bytes([i]) * 1000) for i in range(20)))
    data = await blobs.get("inputs/j/a.png")
    assert len(data) == 1000 and len(set(data)) == 1
    assert not list((tmp_path / "inputs" / "j").glob("*.tmp"))
