"""The blob stores behind every result: the local folder and a real S3 server (SeaweedFS started by the tests),
held to one contract, then the bridge on S3: results written once to the bucket, answered as presigned links that
S3 itself checks, and the bridge's own routes reading from the bucket."""
from __future__ import annotations

import asyncio
import io
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bridge.storage import BlobNotFound, open_blob_store
from bridge.storage.local import LocalBlobs
from bridge.storage.s3 import S3Blobs

pytestmark = pytest.mark.asyncio


def fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), ""


@pytest_asyncio.fixture(params=["local", "s3"])
async def store(request: Any, tmp_path: Any) -> Any:
    if request.param == "local":
        yield LocalBlobs(tmp_path / "blobs")
        return
    server = request.getfixturevalue("s3_server")
    blobs = open_blob_store(f"s3://{server.bucket}/t-{uuid.uuid4().hex[:8]}", tmp_path, endpoint=server.endpoint,
                            access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)
    yield blobs
    await blobs.delete_prefix("")
    await blobs.close()


async def keys(store: Any, prefix: str = "") -> list[str]:
    return sorted([info.key async for info in store.list(prefix)])


async def test_one_contract_for_every_store(store: Any) -> None:
    await store.put("outputs/j1/images_0.png", b"first", "image/png")
    await store.put("outputs/j1/images_1.png", b"second", "image/png")
    await store.put("outputs/j10/images_0.png", b"other job", "image/png")
    await store.put("inputs/j1/image.png", b"input", "image/png")
    await store.put("outputs/j1/images_0.png", b"replaced", "image/png")
    assert await store.get("outputs/j1/images_0.png") == b"replaced"
    assert await keys(store, "outputs/j1/") == ["outputs/j1/images_0.png", "outputs/j1/images_1.png"]
    # a prefix that is not a whole folder matches like a string prefix
    assert await keys(store, "outputs/j1") == ["outputs/j1/images_0.png", "outputs/j1/images_1.png",
                                               "outputs/j10/images_0.png"]
    sizes = {i.key: i.size async for i in store.list("outputs/")}
    assert sizes["outputs/j10/images_0.png"] == len(b"other job")
    assert await store.delete_prefix("outputs/j1/") == 2
    assert await keys(store) == ["inputs/j1/image.png", "outputs/j10/images_0.png"]
    with pytest.raises(BlobNotFound):
        await store.get("outputs/j1/images_0.png")
    for bad in ("../escape.png", "/abs.png", "a//b.png", "outputs/../x.png"):
        with pytest.raises(ValueError):
            await store.put(bad, b"x")


async def test_s3_presigned_links_are_checked_by_s3(s3_server: Any, tmp_path: Any) -> None:
    blobs = S3Blobs(f"s3://{s3_server.bucket}/links", endpoint=s3_server.endpoint,
                    access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)
    await blobs.put("outputs/a/images_0.png", b"\x89PNG-bytes", "image/png")
    url = await blobs.url("outputs/a/images_0.png", 60)
    assert url is not None and "X-Amz-Signature=" in url and "/links/outputs/a/images_0.png" in url
    status, body, ctype = await asyncio.to_thread(fetch, url)
    assert (status, body, ctype) == (200, b"\x89PNG-bytes", "image/png")
    # S3 refuses a changed link, a link without a signature, and a store with the wrong secret
    assert (await asyncio.to_thread(fetch, url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")))[0] == 403
    assert (await asyncio.to_thread(fetch, url.split("?")[0]))[0] == 403
    wrong = S3Blobs(f"s3://{s3_server.bucket}/links", endpoint=s3_server.endpoint,
                    access_key_id=s3_server.access_key_id, secret_access_key="not-the-secret")
    with pytest.raises(Exception, match="(?i)signature|denied|forbidden|privileges"):
        await wrong.get("outputs/a/images_0.png")
    assert await LocalBlobs(tmp_path).url("x.png", 60) is None  # the bridge serves local files itself


async def test_presigned_links_signed_in_python_equal_obstores() -> None:
    """The bridge signs links in Python (cheaper on its loop): the very URL obstore signs at the same second, for
    keys that need escapes and for other endpoints and regions; AWS's own example of a presigned URL; a day's
    change of signing key; a URL it cannot reproduce leaves obstore signing. No server needed: signing is local."""
    import datetime as dt

    import obstore

    from bridge.storage.s3 import Presigner

    stores = [S3Blobs("s3://bucket-x/some/pre", endpoint="http://127.0.0.1:8333", access_key_id="AKIDEXAMPLE",
                      secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
              S3Blobs("s3://bucket-y", region="eu-west-1", access_key_id="AK/ID+", secret_access_key="s"),
              S3Blobs("s3://b", endpoint="https://minio.example.com:443", access_key_id="k", secret_access_key="s")]
    for blobs in stores:
        assert blobs.presigner is not None
        for key in ("outputs/job_0123/images_0.png", "outputs/j 1/ä+x(1)!*'.png", "a~b/-_./%41#?[].png"):
            theirs = obstore.sign(blobs.store, "GET", blobs._path(key), dt.timedelta(seconds=900))
            stamp = urllib.parse.parse_qs(urllib.parse.urlsplit(theirs).query)["X-Amz-Date"][0]
            at = dt.datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc).timestamp()
            assert blobs.presigner.url(blobs._path(key), 900, at) == theirs, key
    with pytest.raises(ValueError, match="control character"):
        await stores[0].url("outputs/j\x01/images_0.png", 60)  # obstore refuses these keys: so does the bridge
    # AWS's example (Signature Version 4, "authenticating requests: using query parameters")
    aws = Presigner("https://examplebucket.s3.amazonaws.com/", "us-east-1", "AKIAIOSFODNN7EXAMPLE",
                    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    assert aws.url("test.txt", 86400, dt.datetime(2013, 5, 24, tzinfo=dt.timezone.utc).timestamp()).endswith(
        "X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404")
    # across midnight (UTC) the signing key is derived again: each link equals a fresh signer's
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc).timestamp()
    for at in (midnight - 1, midnight, midnight - 1):
        fresh = Presigner(aws.base, aws.region, aws.key_id, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
        assert aws.url("test.txt", 60, at) == fresh.url("test.txt", 60, at)
    assert "%2F20261126%2F" in aws.url("test.txt", 60, midnight)
    # a presigner built from another secret does not reproduce obstore's URL: obstore signs
    assert Presigner.matching(stores[0].store, "us-east-1", "AKIDEXAMPLE", "another") is None
    assert Presigner.matching(stores[0].store, "us-east-1", "AKIDEXAMPLE",
                              "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY") is not None


async def test_python_signed_links_with_escapes_are_served_by_s3(s3_server: Any) -> None:
    blobs = S3Blobs(f"s3://{s3_server.bucket}/signed", endpoint=s3_server.endpoint,
                    access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)
    assert blobs.presigner is not None
    await blobs.put("outputs/j 1/ä+(1).png", b"escaped", "image/png")
    url = await blobs.url("outputs/j 1/ä+(1).png", 60)
    assert "/signed/outputs/j%201/%C3%A4%2B%281%29.png?" in url
    assert await asyncio.to_thread(fetch, url) == (200, b"escaped", "image/png")


async def test_storage_setting_is_checked() -> None:
    from bridge.config import load_settings

    assert load_settings({"storage": " "}, env_file=None).storage == "local"
    with pytest.raises(Exception, match="s3://bucket"):
        load_settings({"storage": "gs://bucket"}, env_file=None)


# ------------------------------------------------------------------------------------------ the bridge on S3
def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


async def test_bridge_results_live_in_s3_and_leave_as_presigned_links(bridge_factory: Any, s3_server: Any,
                                                                       tmp_path: Any) -> None:
    prefix = f"bridge-{uuid.uuid4().hex[:8]}"
    client = await bridge_factory(adapters=["jobs_api", "aleaart", "unified"], **s3_server.settings(prefix),
                                  UNIFIED_BACKEND="sd15")
    bucket = S3Blobs(f"s3://{s3_server.bucket}/{prefix}", endpoint=s3_server.endpoint,
                     access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)
    body = {"prompt": "a cat", "width": 64, "height": 64, "steps": 2, "response_format": "url"}
    job_id = (await (await client.post("/generate/text2img", json=body)).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    assert job["status"] == "completed", job
    link = job["result"]["images"][0]
    assert link.startswith(s3_server.endpoint) and "X-Amz-Signature=" in link
    status, data, _ = await asyncio.to_thread(fetch, link)
    assert status == 200 and png_size(data) == (64, 64)
    # written once, to the bucket: nothing under the data directory's outputs
    assert [k for k in await keys(bucket, f"outputs/{job_id}/")] == [f"outputs/{job_id}/images_0.png"]
    assert not [p for p in tmp_path.rglob("*.png")]
    # inline on request, from the same blob
    inline = await (await client.get(f"/jobs/{job_id}?response_format=b64")).json()
    assert inline["result"]["images"][0].startswith("data:image/png;base64,")
    # the bridge's own result route sends the client to S3
    resp = await client.get(f"/jobs/{job_id}/outputs/images/0", allow_redirects=False)
    assert resp.status == 307 and resp.headers["Location"].startswith(s3_server.endpoint)
    # /generate answers links too, and AleaArt's /generated_images reads from the bucket
    gen = await (await client.post("/generate", json={**body, "seed": 3})).json()
    assert gen["status"] == "ok" and gen["base64"] is None and gen["images"][0] == gen["image"]
    assert (await asyncio.to_thread(fetch, gen["image"]))[0] == 200
    art = await client.post("/generate-image", json={"prompt": "a fox", "steps": 2, "width": 64, "height": 64,
                                                     "tokenId": 7})
    answer = await art.json()
    assert art.status == 200, answer
    art_job = answer["imageUrl"].rsplit("_", 1)[1].removesuffix(".png")
    assert [k for k in await keys(bucket, f"outputs/{art_job}/")] == [f"outputs/{art_job}/images_0.png"]
    assert not [k for k in await keys(bucket, "generated_images/")]  # one copy: the job's result
    resp = await client.get(answer["imageUrl"], allow_redirects=False)
    assert resp.status == 307
    status, data, _ = await asyncio.to_thread(fetch, resp.headers["Location"])
    assert status == 200 and png_size(data) == (64, 64)


async def test_local_links_point_at_the_bridge(bridge_factory: Any) -> None:
    client = await bridge_factory(adapters=["jobs_api"])
    job_id = (await (await client.post("/generate/text2img", json={
        "prompt": "a cat", "width": 64, "height": 64, "steps": 2, "response_format": "url"})).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    link = job["result"]["images"][0]
    parts = urllib.parse.urlsplit(link)
    assert parts.path == f"/jobs/{job_id}/outputs/images/0" and parts.netloc == f"{client.host}:{client.port}"
    resp = await client.get(parts.path)
    assert resp.status == 200 and png_size(await resp.read()) == (64, 64)
    bad = await client.get(f"/jobs/{job_id}?response_format=jpeg")
    assert bad.status == 400 and "response_format" in await bad.text()


@pytest.mark.comfyui
@pytest.mark.slow
async def test_real_comfyui_result_stored_in_s3_and_fetched_by_its_presigned_link(comfyui: Any, s3_server: Any,
                                                                                   aiohttp_client: Any,
                                                                                   tmp_path: Any) -> None:
    from bridge.app import create_app
    from bridge.config import load_settings
    from tests.support.real_comfyui import TINY_CHECKPOINT

    prefix = f"real-{uuid.uuid4().hex[:8]}"
    settings = load_settings({"data_dir": tmp_path / "data", "comfyui_urls": [comfyui.url],
                              **s3_server.settings(prefix)}, env_file=None)
    client = await aiohttp_client(create_app(settings, adapter_names=["jobs_api"]))
    resp = await client.post("/workflows/txt2img?wait=300", json={
        "parameters": {"prompt": "a pixel cat", "width": 64, "height": 64, "steps": 1, "seed": 5,
                       "checkpoint": TINY_CHECKPOINT}, "response_format": "url"})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    link = job["result"]["images"][0]
    status, data, ctype = await asyncio.to_thread(fetch, link)
    assert status == 200 and ctype == "image/png" and png_size(data) == (64, 64)
    bucket = S3Blobs(f"s3://{s3_server.bucket}/{prefix}", endpoint=s3_server.endpoint,
                     access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)
    assert await bucket.get(f"outputs/{job['id']}/images_0.png") == data
    assert not list((tmp_path / "data").rglob("*.png"))


@pytest.mark.parametrize("fmt,quality", [("webp", 100), ("webp", 60), ("jpeg", 85)])
async def test_output_format_is_stored_once_and_answered_everywhere(bridge_factory: Any, fmt: str,
                                                                    quality: int) -> None:
    import base64

    from bridge import images as image_io

    client = await bridge_factory(adapters=["jobs_api", "unified"], UNIFIED_BACKEND="sd15")
    job_id = (await (await client.post("/generate/text2img", json={
        "prompt": "a cat", "width": 64, "height": 64, "steps": 2, "output_format": fmt,
        "output_quality": quality})).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    data_url = job["result"]["images"][0]
    assert data_url.startswith(f"data:image/{fmt};base64,")
    data = base64.b64decode(data_url.split(",", 1)[1])
    resp = await client.get(f"/jobs/{job_id}/outputs/images/0")
    assert resp.status == 200 and resp.content_type == f"image/{fmt}" and await resp.read() == data
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == fmt.upper() and im.size == (64, 64)
    gen = await (await client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "steps": 1,
                                                      "output_format": fmt, "output_quality": quality})).json()
    assert image_io.sniff_image_type(base64.b64decode(gen["image"])) == fmt and (gen["width"], gen["height"]) == (64, 64)
    bad = await client.post("/generate/text2img", json={"prompt": "a", "output_format": "bmp"})
    assert bad.status == 400 and (await bad.json())["field"] == "output_format"
    bad = await client.post("/generate/text2img", json={"prompt": "a", "output_quality": 0})
    assert bad.status == 400 and (await bad.json())["field"] == "output_quality"


async def test_convert_output_matches_pillow_and_keeps_alpha() -> None:
    import numpy as np

    from bridge import images as image_io

    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((20, 30)) < 0.3, 0, 255)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    lossless = image_io.convert_output(buf.getvalue(), "webp", 100)
    with Image.open(io.BytesIO(lossless)) as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), rgba)
    # JPEG: a smooth picture with a transparent block comes back on white, close to the numpy composite
    yy, xx = np.mgrid[0:48, 0:64]
    smooth = np.dstack([xx * 4, yy * 5, 255 - xx * 2, np.full_like(xx, 255)]).astype(np.uint8)
    smooth[8:24, 16:40, 3] = 0
    sbuf = io.BytesIO()
    Image.fromarray(smooth, "RGBA").save(sbuf, format="PNG")
    with Image.open(io.BytesIO(image_io.convert_output(sbuf.getvalue(), "jpeg", 95))) as im:
        assert im.format == "JPEG" and im.mode == "RGB"
        got = np.asarray(im).astype(int)
    expected = np.where(smooth[..., 3:] == 0, 255, smooth[..., :3]).astype(int)
    assert np.abs(got - expected).mean() < 3 and (got[12:20, 20:36] > 245).all()
    assert image_io.convert_output(buf.getvalue(), "png") == buf.getvalue()


async def test_indexed_pngs_are_never_converted() -> None:
    from bridge import images as image_io
    from pixart_nodes.core import indexed
    from pixart_nodes.core.palette import named_palette

    pal = named_palette("pico-8")
    data = indexed.indexed_png(pal.colors[[[0, 1], [2, 3]]], pal)
    assert image_io.convert_output(data, "webp") == data and image_io.convert_output(data, "jpeg") == data


# ------------------------------------------------------------------------------------------ s3:// input images
def _bucket(s3_server: Any, prefix: str = "") -> S3Blobs:
    return S3Blobs(f"s3://{s3_server.bucket}" + (f"/{prefix}" if prefix else ""), endpoint=s3_server.endpoint,
                   access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)


async def test_s3_input_keys_the_store_refuses_are_the_clients_error(bridge_factory: Any, s3_server: Any) -> None:
    # a key S3 answers 400 to (SeaweedFS: a backslash) came out of obstore as GenericError: a 500 for the request
    blobs = _bucket(s3_server)
    for key in ("uploads/a\\..\\b.png", "uploads/a\x00b.png", "uploads/\ud800.png", "uploads/" + "k" * 1100):
        with pytest.raises(ValueError):
            await blobs.read_path(key, 1000)
    client = await bridge_factory(adapters=["jobs_api"], **s3_server.settings(f"in-{uuid.uuid4().hex[:8]}"))
    resp = await client.post("/generate/img2img", json={
        "prompt": "a cat", "steps": 2, "initImage": f"s3://{s3_server.bucket}/uploads/a\\..\\b.png"})
    err = await resp.json()
    assert resp.status == 400 and err["field"] == "initImage", err


async def test_s3_input_read_is_bounded_even_when_the_object_grows_after_its_head(s3_server: Any,
                                                                                monkeypatch: Any) -> None:
    # the size was checked by HEAD and the GET then read the whole object, whatever it had become
    import obstore

    blobs = _bucket(s3_server)
    key = f"uploads/{uuid.uuid4().hex}.png"
    await blobs.put(key, b"x" * 100)
    real_head = obstore.head_async

    async def head_then_grow(store: Any, path: str) -> Any:
        meta = await real_head(store, path)
        await obstore.put_async(store, path, b"y" * 5000)  # replaced between the HEAD and the GET
        return meta

    asked: list[Any] = []
    real_get = obstore.get_async

    async def get(store: Any, path: str, **kw: Any) -> Any:
        asked.append(kw.get("options"))
        return await real_get(store, path, **kw)

    monkeypatch.setattr(obstore, "head_async", head_then_grow)
    monkeypatch.setattr(obstore, "get_async", get)
    with pytest.raises(ValueError, match="limit is 1000"):
        await blobs.read_path(key, 1000)
    assert asked == [{"range": (0, 1001)}]  # no more than a byte past the limit crossed the wire
    monkeypatch.undo()
    assert await blobs.read_path(key, 5000) == b"y" * 5000
    await blobs.put("uploads/empty.png", b"")
    assert await blobs.read_path("uploads/empty.png", 1000) == b""
