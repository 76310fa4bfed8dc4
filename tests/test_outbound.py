"""Image inputs by URL and the outbound policy behind them (and behind webhooks): public addresses only after DNS
resolution, re-checked on every redirect, with size, time and redirect limits; an allow-list admits a local
server; every refusal is a 400 naming the field. The image server is a real HTTP server on loopback."""
from __future__ import annotations

import asyncio
import base64
import gzip
import ipaddress
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from bridge.outbound import Outbound, OutboundPolicy, OutboundRefused, check_url
from tests.support.imaging import claimed_png, encode, image_size

pytestmark = pytest.mark.asyncio

PUBLIC = OutboundPolicy()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/x.png", "http://127.9.9.9/x.png", "http://10.1.2.3/x.png", "http://192.168.0.1/x.png",
    "http://172.16.0.1/x.png", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/x.png",
    "http://0.0.0.0/x.png", "http://[::1]/x.png", "http://[::ffff:127.0.0.1]/x.png", "http://[fd00::1]/x.png",
    "http://[fe80::1]/x.png", "http://224.0.0.1/x.png",
])
async def test_literal_private_addresses_are_refused(url: str) -> None:
    with pytest.raises(OutboundRefused, match="BRIDGE_OUTBOUND_ALLOW"):
        check_url(url, PUBLIC)


@pytest.mark.parametrize("url,why", [
    ("https://.2\u00d0y/", "not a valid host name"),
    ("http://" + "a" * 64 + ".example/", "not a valid host name"),
    ("ftp://example.com/x.png", "http:// or https://"), ("file:///etc/passwd", "http:// or https://"),
    ("http://user:pw@example.com/x.png", "credentials"), ("http:///x.png", "no host"),
    ("http://example.com:99999/x.png", "valid URL"), ("http://example.com:0/x.png", "port 0"),
    # a NUL was kept by SQLite and refused by PostgreSQL, where the end's write of a job with such a receiver failed
    # on every try; urlsplit drops a tab where another parser may not
    ("http://example.com/x\x00.png", "control characters"), ("http://exam\tple.com/x.png", "control characters"),
])
async def test_malformed_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(OutboundRefused, match=why):
        check_url(url, PUBLIC)


async def test_public_addresses_and_the_allow_list_pass() -> None:
    assert check_url("https://93.184.215.14/x.png", PUBLIC) == "93.184.215.14"
    allow = OutboundPolicy.from_list(["127.0.0.1", "10.0.0.0/8", "Hooks.LAN"])
    assert check_url("http://10.20.30.40/x", allow) == "10.20.30.40"
    assert allow.allow_networks == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert "hooks.lan" in allow.allow_hosts
    with pytest.raises(OutboundRefused):
        check_url("http://192.168.1.1/x", allow)


# this Python calls these global: NAT64 (64:ff9b::/96) and 6to4 (2002::/16) lead to the IPv4 address they embed, and
# the local-use NAT64 prefix (64:ff9b:1::/48) and IPv4-compatible addresses are reserved
@pytest.mark.parametrize("literal,why", [
    ("64:ff9b::7f00:1", "resolves to 127.0.0.1,"), ("64:ff9b::a9fe:a9fe", "resolves to 169.254.169.254,"),
    ("64:ff9b::a00:1", "resolves to 10.0.0.1,"), ("2002:7f00:1::", "resolves to 127.0.0.1,"),
    ("2002:a9fe:a9fe::1", "resolves to 169.254.169.254,"), ("2002:e000:1::", "resolves to 224.0.0.1,"),
    ("64:ff9b:1::7f00:1", "reserved"), ("64:ff9b:1::808:808", "reserved"), ("::127.0.0.1", "reserved"),
    ("2001:0:7f00:1::", "reserved"),  # Teredo: already not global
])
async def test_an_ipv6_address_embedding_a_refused_one_is_refused(literal: str, why: str, monkeypatch: Any) -> None:
    if why == "reserved":  # every refusal's text says "reserved": these are refused as themselves, not unwrapped
        import ipaddress

        why = f"resolves to {ipaddress.ip_address(literal)},"
    with pytest.raises(OutboundRefused, match=f"{why}.*BRIDGE_OUTBOUND_ALLOW"):
        check_url(f"http://[{literal}]/x.png", PUBLIC)
    # and by name, as a resolver's answer
    import socket

    from bridge import outbound

    def answer(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (literal, port, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", answer)
    with pytest.raises(OutboundRefused, match=f"hooks.test .*{why}"):
        await outbound.CheckedResolver(PUBLIC).resolve("hooks.test", 80, socket.AF_UNSPEC)


async def test_an_ipv6_address_embedding_a_public_one_passes(monkeypatch: Any) -> None:
    import socket

    from bridge import outbound

    for literal in ("64:ff9b::808:808", "2002:808:808::1", "2001:4860:4860::8888"):
        assert check_url(f"http://[{literal}]/x.png", PUBLIC) == literal
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, *args, **kwargs: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) for a in ("64:ff9b::7f00:1", "64:ff9b::808:808")])
    kept = await outbound.CheckedResolver(PUBLIC).resolve("hooks.test", 80, socket.AF_UNSPEC)
    assert [r["host"] for r in kept] == ["64:ff9b::808:808"]  # connected to as named
    # the allow-list admits either form: the IPv4 address embedded, or the IPv6 network named
    assert check_url("http://[64:ff9b::a00:1]/x", OutboundPolicy.from_list(["10.0.0.0/8"])) == "64:ff9b::a00:1"
    assert check_url("http://[2002:a00:1::]/x", OutboundPolicy.from_list(["10.0.0.0/8"])) == "2002:a00:1::"
    nat64 = OutboundPolicy.from_list(["64:ff9b::a00:0/120", "64:ff9b:1::/48"])
    assert check_url("http://[64:ff9b::a00:1]/x", nat64) == "64:ff9b::a00:1"
    assert check_url("http://[64:ff9b:1::a00:1]/x", nat64) == "64:ff9b:1::a00:1"
    with pytest.raises(OutboundRefused, match="resolves to 127.0.0.1"):
        check_url("http://[64:ff9b::7f00:1]/x", nat64)


# ------------------------------------------------------------------------------------------ a real HTTP server
PNG = encode(np.random.default_rng(1).integers(0, 256, (72, 96, 3), dtype=np.uint8))
PNG_B64 = base64.b64encode(PNG).decode()


@pytest_asyncio.fixture
async def images(aiohttp_server: Any) -> Any:
    async def png(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the limit must hold while streaming
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"\0" * 65536)
        return resp

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(body=PNG)

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["where"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def bomb(request: web.Request) -> web.Response:
        return web.Response(body=claimed_png(60000, 60000), content_type="image/png")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    for path, fn in (("/a.png", png), ("/big", big), ("/slow", slow), ("/to", to), ("/loop", loop),
                     ("/bomb.png", bomb), ("/missing", missing)):
        app.router.add_get(path, fn)
    server = await aiohttp_server(app, host="127.0.0.1")
    server.base = f"http://127.0.0.1:{server.port}"
    return server


async def test_fetch_with_limits(images: Any) -> None:
    base = images.base
    refused = Outbound(OutboundPolicy())
    allowed = Outbound(OutboundPolicy.from_list(["127.0.0.1"], max_bytes=1_000_000, timeout=1.0, max_redirects=3))
    try:
        with pytest.raises(OutboundRefused, match="127.0.0.1"):
            await refused.fetch(f"{base}/a.png")
        # a name is checked on what it resolves to
        with pytest.raises(OutboundRefused, match="localhost resolves to 127.0.0.1"):
            await refused.fetch(f"http://localhost:{images.port}/a.png")
        assert await allowed.fetch(f"{base}/a.png") == PNG
        with pytest.raises(OutboundRefused, match="more than 1000000 bytes"):
            await allowed.fetch(f"{base}/big")
        with pytest.raises(OutboundRefused, match="within 1 s"):
            await allowed.fetch(f"{base}/slow")
        with pytest.raises(OutboundRefused, match="more than 3 redirects"):
            await allowed.fetch(f"{base}/loop")
        with pytest.raises(OutboundRefused, match="HTTP 404"):
            await allowed.fetch(f"{base}/missing")
        # a redirect is checked like the first URL: allowed host -> a refused address
        assert await allowed.fetch(f"{base}/to?where=/a.png") == PNG
        with pytest.raises(OutboundRefused, match="169.254.169.254"):
            await allowed.fetch(f"{base}/to?where=http://169.254.169.254/latest/meta-data/")
    finally:
        await refused.close()
        await allowed.close()


async def test_a_compressed_answer_is_bounded_by_its_decompressed_bytes(aiohttp_server: Any) -> None:
    # 256 MiB of zeros in 250 KB of gzip: the limit counts what decompression gives, and nothing near it is held
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(bytes(1 << 20)) for _ in range(256)) + packer.flush()
    small = gzip.compress(PNG)

    async def answer(request: web.Request) -> web.Response:
        body = bomb if request.path == "/bomb.png" else small
        return web.Response(body=body, headers={"Content-Encoding": "gzip", "Content-Type": "image/png"})

    app = web.Application()
    app.router.add_get("/{name}", answer)
    server = await aiohttp_server(app, host="127.0.0.1")
    out = Outbound(OutboundPolicy.from_list(["127.0.0.1"], max_bytes=1_000_000))
    tracemalloc.start()
    try:
        assert await out.fetch(f"http://127.0.0.1:{server.port}/small.png") == PNG
        tracemalloc.reset_peak()
        with pytest.raises(OutboundRefused, match="more than 1000000 bytes"):
            await out.fetch(f"http://127.0.0.1:{server.port}/bomb.png")
        assert tracemalloc.get_traced_memory()[1] < 32 << 20
    finally:
        tracemalloc.stop()
        await out.close()


async def test_no_cookie_travels_from_one_request_to_the_next(aiohttp_server: Any) -> None:
    # the session serves every client's input URLs and webhooks: what one server sets must not reach the next call
    seen: list[str | None] = []

    async def setter(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.Response(body=PNG, content_type="image/png")
        resp.set_cookie("session", "client-a", path="/")
        return resp

    async def hook(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/a.png", setter)
    app.router.add_post("/hook", hook)
    server = await aiohttp_server(app, host="127.0.0.1")
    # by name: aiohttp's default jar keeps no cookie from a bare address, and real servers have names
    base = f"http://localhost:{server.port}"
    out = Outbound(OutboundPolicy.from_list(["localhost"]))
    try:
        assert await out.fetch(f"{base}/a.png") == PNG
        assert await out.fetch(f"{base}/a.png") == PNG
        assert await out.post(f"{base}/hook", b"{}", {"content-type": "application/json"}, 5) == 204
    finally:
        await out.close()
    assert seen == [None, None, None]


async def test_by_host_name_only_the_name_is_admitted(images: Any) -> None:
    by_name = Outbound(OutboundPolicy.from_list(["localhost"]))
    try:
        assert await by_name.fetch(f"http://localhost:{images.port}/a.png") == PNG
        with pytest.raises(OutboundRefused, match="127.0.0.1"):
            await by_name.fetch(f"http://localhost:{images.port}/to?where={images.base}/a.png")
    finally:
        await by_name.close()


# ------------------------------------------------------------------------------------------ every dialect
async def test_jobs_api_takes_an_image_url_only_where_allowed(bridge_factory: Any, images: Any) -> None:
    body = {"prompt": "a cat", "initImage": f"{images.base}/a.png", "steps": 2}
    refused = await bridge_factory(adapters=["jobs_api"])
    resp = await refused.post("/generate/img2img", json=body)
    err = await resp.json()
    assert resp.status == 400 and err["field"] == "initImage" and "BRIDGE_OUTBOUND_ALLOW" in err["error"]
    await refused.close()  # on PostgreSQL a bridge alive beside the next is its replica, and could take its job
    client = await bridge_factory(adapters=["jobs_api"], outbound_allow="127.0.0.1")
    job_id = (await (await client.post("/generate/img2img", json=body)).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    assert job["status"] == "completed", job
    # the fetched 96x72 picture set the size (no width/height in the request)
    assert job["request"]["initImage"] == {"width": 96, "height": 72, "format": "PNG"}
    assert (job["result"]["parameters"]["width"], job["result"]["parameters"]["height"]) == (96, 72)
    bomb = await client.post("/generate/img2img", json={**body, "initImage": f"{images.base}/bomb.png"})
    assert bomb.status == 413 and (await bomb.json())["field"] == "initImage"
    gone = await client.post("/generate/img2img", json={**body, "initImage": f"{images.base}/missing"})
    assert gone.status == 400 and "HTTP 404" in (await gone.json())["error"]


async def test_generic_workflow_a1111_and_generate_take_image_urls(bridge_factory: Any, images: Any) -> None:
    url = f"{images.base}/a.png"
    client = await bridge_factory(adapters=["jobs_api", "a1111", "unified"], outbound_allow="127.0.0.1",
                                  UNIFIED_BACKEND="sd15")
    resp = await client.post("/workflows/img2img?wait=30", json={"parameters": {
        "prompt": "x", "image": url, "steps": 1, "width": 64, "height": 64}})
    job = await resp.json()
    assert resp.status == 200 and job["status"] == "completed", job
    a1111 = await client.post("/sdapi/v1/img2img", json={"init_images": [url], "prompt": "x", "steps": 1,
                                                         "width": 64, "height": 64})
    assert a1111.status == 200, await a1111.text()
    gen = await client.post("/generate", json={"prompt": "x", "init_image": url, "steps": 1, "width": 64,
                                               "height": 64})
    assert gen.status == 200 and (await gen.json())["status"] == "ok"
    refused = await bridge_factory(adapters=["a1111", "unified"], UNIFIED_BACKEND="sd15")
    bad = await refused.post("/sdapi/v1/img2img", json={"init_images": [url], "prompt": "x"})
    data = await bad.json()
    assert bad.status == 400 and "init_images[0]" in data["detail"] + data.get("errors", "") + str(data)
    bad = await refused.post("/generate", json={"prompt": "x", "init_image": url})
    assert bad.status == 400 and (await bad.json())["field"] == "init_image"


@pytest.mark.parametrize("body,max_pixels,stop,words", [
    (claimed_png(2000, 2000), 10_000_000, 2, "images have more than 10,000,000 pixels"),  # 4M pixels each
    # few pixels, many bytes (a PNG with 3 MB after its end): the fetched files are bounded by 4 bytes a pixel
    (claimed_png(100, 100) + bytes(3_000_000), 1_000_000, 1, "images are more than 4,000,000 bytes"),
])
async def test_image_urls_stop_at_the_first_over_the_requests_budget(bridge_factory: Any, aiohttp_server: Any,
                                                                     body: bytes, max_pixels: int, stop: int,
                                                                     words: str) -> None:
    # each image is checked as it arrives: 64 URLs of 20 MB were all held before any was checked
    served: list[str] = []

    async def large(request: web.Request) -> web.Response:
        served.append(request.path)
        return web.Response(body=body, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{n}.png", large)
    server = await aiohttp_server(app, host="127.0.0.1")
    client = await bridge_factory(adapters=["a1111"], outbound_allow="127.0.0.1", max_request_pixels=max_pixels)
    urls = [{"data": f"http://127.0.0.1:{server.port}/{n}.png", "name": f"{n}.png"} for n in range(10)]
    resp = await client.post("/sdapi/v1/extra-batch-images", json={"imageList": urls, "upscaler_1": "Lanczos"})
    data = await resp.json()
    assert resp.status == 413 and data["errors"].startswith(f"imageList[{stop}].data: the request's {words}"), data
    assert served == [f"/{n}.png" for n in range(stop + 1)]


async def test_masks_and_sketches_by_url(bridge_factory: Any, images: Any) -> None:
    url = f"{images.base}/a.png"
    client = await bridge_factory(adapters=["jobs_api", "a1111", "pixart_editor"], outbound_allow="127.0.0.1")
    # A1111 inpainting: the mask by URL as well as the picture
    resp = await client.post("/sdapi/v1/img2img", json={"init_images": [url], "mask": url, "prompt": "x",
                                                        "steps": 1, "width": 64, "height": 64})
    assert resp.status == 200, await resp.text()
    assert "mask" in (await resp.json())["parameters"]
    # the jobs API's inpaint mask
    body = {"prompt": "x", "image": url, "mask": url, "steps": 1}
    job_id = (await (await client.post("/generate/inpaint", json=body)).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    assert job["status"] == "completed", job
    # the editor's sketch
    resp = await client.post("/api/pixel-generation/generate", json={
        "id": "by-url", "sketchData": url, "width": 12, "height": 9, "useAI": False})
    assert resp.status == 200, await resp.text()
    done = await (await client.get("/api/pixel-generation/status/by-url?wait=30")).json()
    assert done["status"] == "completed" and done["metadata"]["pixelCount"] == 108
    # refused where the address is not allowed, named in each dialect's words
    refused = await bridge_factory(adapters=["jobs_api", "a1111", "pixart_editor"])
    bad = await refused.post("/sdapi/v1/img2img", json={"init_images": [PNG_B64], "mask": url, "prompt": "x"})
    assert bad.status == 400 and "mask" in str(await bad.json())
    bad = await refused.post("/generate/inpaint", json={**body, "image": PNG_B64})
    assert bad.status == 400 and (await bad.json())["field"] == "mask"
    bad = await refused.post("/api/pixel-generation/generate", json={
        "id": "by-url-refused", "sketchData": url, "width": 12, "height": 9})
    assert bad.status == 400 and (await bad.json())["field"] == "sketchData"


async def test_s3_inputs_come_from_the_bridges_own_bucket_only(bridge_factory: Any, s3_server: Any) -> None:
    from bridge.storage.s3 import S3Blobs

    bucket = S3Blobs(f"s3://{s3_server.bucket}", endpoint=s3_server.endpoint,
                     access_key_id=s3_server.access_key_id, secret_access_key=s3_server.secret_access_key)
    await bucket.put("uploads/sketch.png", PNG, "image/png")
    client = await bridge_factory(adapters=["jobs_api"], **s3_server.settings("results"))
    body = {"prompt": "a cat", "initImage": f"s3://{s3_server.bucket}/uploads/sketch.png", "steps": 2}
    job_id = (await (await client.post("/generate/img2img", json=body)).json())["id"]
    job = await (await client.get(f"/jobs/{job_id}?wait=30")).json()
    assert job["status"] == "completed" and job["request"]["initImage"]["width"] == 96
    for url, why in (("s3://another-bucket/uploads/sketch.png", "own bucket"),
                     (f"s3://{s3_server.bucket}/uploads/none.png", "does not exist")):
        resp = await client.post("/generate/img2img", json={**body, "initImage": url})
        err = await resp.json()
        assert resp.status == 400 and err["field"] == "initImage" and why in err["error"], err
    assert image_size(PNG) == (96, 72)


async def test_slow_name_lookups_leave_the_default_thread_pool_free(monkeypatch: Any) -> None:
    # a name whose server never answers holds a lookup thread; in the loop's default pool (6 threads on 2 cores)
    # a few of them stalled every asyncio.to_thread (large bodies, stored files)
    import socket
    import threading

    from bridge import outbound

    release = threading.Event()
    threads: list[str] = []
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        threads.append(threading.current_thread().name)
        release.wait(10)
        return real("127.0.0.1", *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    policy = OutboundPolicy.from_list(["127.0.0.1"])
    lookups = [asyncio.create_task(outbound.CheckedResolver(policy).resolve(f"slow{i}.test", 80)) for i in range(40)]
    try:
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5) == "free"
        assert not any(t.done() for t in lookups)
    finally:
        release.set()
        results = await asyncio.gather(*lookups)
    assert all(r[0]["host"] == "127.0.0.1" for r in results)
    assert threads and all(name.startswith("pixart-dns") for name in threads)


@pytest.mark.parametrize("location", ["http://[::1/x.png", "http://[not-an-address]/x.png", "//[::1/x.png"])
async def test_a_redirect_to_a_malformed_url_is_refused(aiohttp_server: Any, location: str) -> None:
    # the first URL is checked by check_url; a redirect's target came from the server, and urljoin raised
    # ValueError on it (a 500 for the request that named the first URL)
    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": location})

    app = web.Application()
    app.router.add_get("/r.png", redirect)
    server = await aiohttp_server(app, host="127.0.0.1")
    out = Outbound(OutboundPolicy.from_list(["127.0.0.1"]))
    try:
        with pytest.raises(OutboundRefused, match="redirected to an invalid URL"):
            await out.fetch(f"http://127.0.0.1:{server.port}/r.png")
    finally:
        await out.close()
