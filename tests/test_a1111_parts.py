"""The A1111 adapter's plain parts against A1111 1.10's documented behaviour (docs/api/a1111.md): infotext read
back, styles, prompt tags and embeddings, option wire types, upscaler names; and the pack's embedding summary
against files written here. No engine, no ComfyUI."""
from __future__ import annotations

import json
import random
import re
import struct

import numpy as np
import pytest
import torch

from bridge.adapters.a1111 import infotext, options, prompts, styles, upscalers
from pixart_nodes.core import model_files

FULL = ('pixel art cat, <lora:pix:0.8>\nNegative prompt: blurry, text\nSteps: 20, Sampler: DPM++ 2M, Schedule type: '
        'Karras, CFG scale: 7, Seed: 123, Size: 64x64, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: '
        '735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, Variation seed: 456, Variation seed strength: '
        '0.3, Seed resize from: 128x96, Denoising strength: 0.5, Clip skip: 2, RNG: CPU, Tiling: True, Hires '
        'upscale: 2, Hires steps: 10, Hires upscaler: Latent (nearest-exact), Lora hashes: "pix: 0123456789ab", '
        'Version: v1.10.1')

EMPTY_PARSE = {"Prompt": "", "Negative prompt": "", "Clip skip": "1", "Hires resize-1": 0, "Hires resize-2": 0,
               "Hires sampler": "Use same sampler", "Hires schedule type": "Use same scheduler",
               "Hires checkpoint": "Use same checkpoint", "Hires prompt": "", "Hires negative prompt": "",
               "Mask mode": "Inpaint masked", "Masked content": "original", "Inpaint area": "Whole picture",
               "Masked area padding": 32, "RNG": "GPU", "Schedule type": "Automatic", "Schedule max sigma": 0,
               "Schedule min sigma": 0, "Schedule rho": 0, "VAE Encoder": "Full", "VAE Decoder": "Full",
               "FP8 weight": "Disable", "Refiner switch by sampling steps": False}


def test_infotext_parse_of_an_empty_text_gives_a1111_defaults():
    assert infotext.parse("") == EMPTY_PARSE


def test_infotext_parse_of_a_full_a1111_infotext():
    p = infotext.parse(FULL)
    assert {k: p[k] for k in ("Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size-1", "Size-2",
                              "Variation seed", "Seed resize from-1", "Seed resize from-2", "Clip skip", "RNG",
                              "Tiling", "Hires upscaler", "Lora hashes", "Prompt", "Negative prompt")} == {
        "Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "7", "Seed": "123",
        "Size-1": "64", "Size-2": "64", "Variation seed": "456", "Seed resize from-1": "128",
        "Seed resize from-2": "96", "Clip skip": "2", "RNG": "CPU", "Tiling": "True",
        "Hires upscaler": "Latent (nearest-exact)", "Lora hashes": "pix: 0123456789ab",
        "Prompt": "pixel art cat, <lora:pix:0.8>", "Negative prompt": "blurry, text"}
    assert p["Hires sampler"] == "Use same sampler" and "Emphasis" not in p


@pytest.mark.parametrize("text,expected", [
    ("just a prompt, no params", {"Prompt": "just a prompt, no params"}),
    ("line one\nline two\nNegative prompt: neg one\nneg two\nSteps: 20, Sampler: Euler, Seed: 1",
     {"Prompt": "line one\nline two", "Negative prompt": "neg one\nneg two", "Steps": "20"}),
    ("(cat:1.2)\nSteps: 1, Sampler: Euler, Seed: 1", {"Emphasis": "Original"}),
    ("x\nSteps: 1, Sampler: Euler, Hires resize: 1024x768, Hires prompt: \"a, detailed\"",
     {"Hires resize-1": "1024", "Hires resize-2": "768", "Hires prompt": "a, detailed"}),
    ("x\nSteps: 1, Sampler: Euler, Size: 1024x1024, First pass size: 0x0",
     {"Size-1": 512, "Size-2": 512, "Hires resize-1": 1024, "Hires resize-2": 1024}),
])
def test_infotext_parse_rules(text, expected):
    p = infotext.parse(text)
    assert {k: p.get(k) for k in expected} == expected


def test_infotext_write_quotes_what_would_not_parse_back():
    text = infotext.write("a cat", "", {"Steps": 2, "Hires prompt": "a, b: c", "Skipped": None})
    assert text == 'a cat\nSteps: 2, Hires prompt: "a, b: c"'
    assert infotext.parse(text + ", Seed: 1")["Hires prompt"] == "a, b: c"


STYLES = """name,prompt,negative_prompt
pixel,"pixel art, {prompt}, 16 colors","blurry"
sharp,"sharp edges","jpeg artifacts, blurry"
# comment,"x","y"
"""


@pytest.mark.parametrize("names,prompt,negative", [
    (["pixel"], "pixel art,   a cat , 16 colors", "low quality, blurry"),
    (["sharp"], "a cat, sharp edges", "low quality, jpeg artifacts, blurry"),
    (["pixel", "sharp"], "pixel art,   a cat , 16 colors, sharp edges", "low quality, blurry, jpeg artifacts, blurry"),
    (["sharp", "pixel"], "pixel art, a cat, sharp edges, 16 colors", "low quality, jpeg artifacts, blurry, blurry"),
    (["nope"], "a cat", "low quality"),
    ([], "  a cat ", "low quality"),
])
def test_styles_apply_like_a1111(tmp_path, names, prompt, negative):
    f = tmp_path / "styles.csv"
    f.write_text(STYLES, encoding="utf-8-sig")
    book = styles.StyleBook(str(f))
    assert [s.name for s in book.styles()] == ["pixel", "sharp"]
    assert book.apply(names, "  a cat ", "low quality") == (prompt, negative)


def test_style_files_are_read_again_when_changed_and_globbed(tmp_path):
    (tmp_path / "a.csv").write_text("name,prompt,negative_prompt\none,first,\n")
    (tmp_path / "b.csv").write_text("name,text\ntwo,second\n")  # the old header
    book = styles.StyleBook(str(tmp_path / "*.csv"))
    assert [(s.name, s.prompt) for s in book.styles()] == [("one", "first"), ("two", "second")]
    (tmp_path / "a.csv").write_text("name,prompt,negative_prompt\none,changed!,\n")
    assert book.styles()[0].prompt == "changed!"
    assert book.apply(["one"], "", "") == ("changed!", "")  # empty prompt: only the style text


def test_styles_that_would_grow_a_prompt_past_the_bound_are_refused_naming_styles(tmp_path):
    """A style with `{prompt}` twice doubles the prompt each time it is named: 64 names (the request's limit) made
    2**64 copies (24 names: 117 MB and counting). The bound is checked before each text is built."""
    import tracemalloc

    from bridge.adapters.a1111.models import A1111Error

    f = tmp_path / "styles.csv"
    f.write_text('name,prompt,negative_prompt\ntwice,"{prompt}, {prompt}","{prompt} {prompt}"\n'
                 'long,"' + "x" * 60_000 + '",\n', encoding="utf-8")
    book = styles.StyleBook(str(f))
    assert book.apply(["twice"] * 3, "cat", "low") == (", ".join(["cat"] * 8), " ".join(["low"] * 8))
    for names, prompt, negative in ((["twice"] * 64, "a cat", ""), (["twice"] * 64, "", "low"),
                                    (["long"] * 64, "a cat", "")):
        tracemalloc.start()
        try:
            with pytest.raises(A1111Error) as info:
                book.apply(names, prompt, negative)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert info.value.status == 400 and info.value.errors.startswith("styles: ")
        assert f"at most {styles.MAX_STYLED_TEXT:,} characters" in info.value.errors
        assert peak < 8 * styles.MAX_STYLED_TEXT


@pytest.mark.parametrize("tag,expected", [
    ("<lora:x>", prompts.LoraTag("x", 1.0, 1.0)),
    ("<lora:x:0.8>", prompts.LoraTag("x", 0.8, 0.8)),
    ("<lora:x:0.5:1>", prompts.LoraTag("x", 0.5, 1.0)),
    ("<lora:x:unet=0.3>", prompts.LoraTag("x", 1.0, 0.3)),
    ("<lyco:x:te=0.2:0.9>", prompts.LoraTag("x", 0.2, 0.2)),  # the named te wins over the 2nd positional
])
def test_lora_tags_read_like_a1111(tag, expected):
    text, nets = prompts.take_networks(f"a cat, {tag}, red")
    assert text == "a cat, , red" and nets.loras == [expected]


def test_tags_are_taken_as_a1111s_pattern_takes_them_in_linear_time():
    rnd = random.Random(5)
    for _ in range(20000):
        text = "".join(rnd.choice("<>:a_1 .\n") for _ in range(rnd.randint(0, 20)))
        assert prompts.take_networks(text)[0] == prompts._TAG.sub("", text), text
    # a search from each `<` of a text without `>` ran to its end: 300,000 characters took minutes
    text, nets = prompts.take_networks("<lora:x:0.5>" + "<a:" * 100_000)
    assert text == "<a:" * 100_000 and nets.loras == [prompts.LoraTag("x", 0.5, 0.5)]


def test_each_distinct_prompt_is_made_ready_for_the_model_once(monkeypatch):
    seen = []
    monkeypatch.setattr(prompts, "take_networks", lambda text: (seen.append(text), (text, None))[1])
    out = prompts.for_model(["a bad_hands", "b", "a bad_hands"], ["sub/bad_hands"])
    assert out == ["a embedding:sub/bad_hands", "b", "a embedding:sub/bad_hands"] and seen == ["a bad_hands", "b"]


def test_lora_names_resolve_by_stem_and_missing_ones_are_skipped():
    found, missing = prompts.lora_files([prompts.LoraTag("pix", 0.5, 1.0), prompts.LoraTag("gone", 1, 1)],
                                        ["a/pix.safetensors", "b.safetensors"])
    assert found == [{"name": "a/pix.safetensors", "strength": 1.0, "clip_strength": 0.5}] and missing == ["gone"]


def test_embeddings_become_comfyui_names_as_whole_words():
    out = prompts.with_embeddings("(EasyNegative:1.2), easynegative2, embedding:easynegative, bad_hands",
                                  ["easynegative", "sub/bad_hands"])
    assert out == "(embedding:easynegative:1.2), easynegative2, embedding:easynegative, embedding:sub/bad_hands"


def test_embeddings_take_the_longest_name_and_leave_what_they_wrote_alone():
    names = ["bad", "sub/bad_hands", "Bad-Dream", "neg.v2", "x(1)", "sub/EasyNeg", "other/easyneg"]
    out = prompts.with_embeddings("bad_hands, BAD, bad-dream, bad_handsome, neg.v2, negxv2, x(1), easyneg, "
                                  "embedding:bad, sub/bad", names)
    assert out == ("embedding:sub/bad_hands, embedding:bad, embedding:Bad-Dream, bad_handsome, embedding:neg.v2, "
                   "negxv2, embedding:x(1), embedding:sub/EasyNeg, embedding:bad, sub/bad")
    # a name inside a longer one that was replaced is not replaced again
    assert prompts.with_embeddings("foo-bar", ["bar", "foo-bar"]) == "embedding:foo-bar"
    assert prompts.with_embeddings("a cat", []) == "a cat"


class _CountingRe:
    """`re` whose compiled patterns count their passes over a text."""

    def __init__(self) -> None:
        self.passes = 0

    def __getattr__(self, name):
        return getattr(re, name)

    def compile(self, *args, **kwargs):
        pattern, outer = re.compile(*args, **kwargs), self

        class Counted:
            def __getattr__(self, name):
                return getattr(pattern, name)

            def sub(self, *a, **k):
                outer.passes += 1
                return pattern.sub(*a, **k)

        return Counted()


def test_a_styled_prompts_length_is_known_before_it_is_made():
    # the bound on styled prompts reads this length; an estimate that counted the comma of an empty side refused
    # an empty style on a prompt near the bound
    from bridge.adapters.a1111.styles import merge, merged_length

    for style in (None, "", "  ", "oil", " oil , ", "{prompt}", "a {prompt}, b {prompt}", "{prompt}{prompt}x"):
        for prompt in ("", "   ", "cat", " a cat ", "{prompt}"):
            assert merged_length(style, prompt) == len(merge(style, prompt)), (style, prompt)


def test_embeddings_are_named_in_one_pass_over_each_prompt(monkeypatch):
    # One pass per embedding per distinct prompt, on the event loop: 64 distinct prompts of 8,400 characters and
    # 300 embeddings (the backend's list) took 6 s. Now one pass per prompt, whatever the number of embeddings.
    counting = _CountingRe()
    prompts._embeddings.cache_clear()  # a pattern made before (or by this test, with the counting module) is made anew
    monkeypatch.setattr(prompts, "re", counting)
    names = [f"sub/one_pass_{i:03d}.pt" for i in range(300)]
    texts = [f"one_pass_{i:03d}.pt and {i} " * 3 for i in range(64)]
    out = prompts.for_model(texts, names)
    assert out[5] == "embedding:sub/one_pass_005.pt and 5 " * 3
    assert counting.passes <= len(texts)
    prompts._embeddings.cache_clear()


def test_prompt_comments_removed_like_a1111():
    assert prompts.strip_comments("a cat # comment\n# whole line\nsecond line") == "a cat \nsecond line"


def test_option_wire_types_follow_a1111_defaults():
    table = options.defaults()
    assert len(table) == 329 and list(table)[:2] == ["samples_save", "samples_format"]
    assert options.wire("jpeg_quality", 90) == 90.0 and isinstance(options.wire("jpeg_quality", 90), float)
    assert options.wire("eta_noise_seed_delta", 31337) == 31337
    assert options.wire("send_seed", False) is False
    with pytest.raises(Exception) as e:
        options.checked_updates({"jpeg_quality": 101})
    assert "jpeg_quality" in str(e.value.errors)
    # HTML texts and command-line-only options are skipped, as A1111 does
    assert options.checked_updates({"sd_vae_explanation": "<p>x</p>", "api_useragent": "x", "send_seed": False}) \
        == {"send_seed": False}


def test_upscaler_names_follow_a1111():
    files = ["RealESRGAN_x2plus.pth", "sub/2x_pixel.safetensors", "foo.pth"]
    listed = upscalers.listed(files)
    assert [u.name for u in listed] == ["None", "Lanczos", "Nearest", "2x_pixel", "foo", "R-ESRGAN 2x+"]
    assert [u.scale for u in listed[3:]] == [2.0, 4.0, 2.0]
    assert upscalers.find("Latent (bicubic)", files, latent=True).kind == "latent"
    assert upscalers.find("Latent (bicubic)", files, latent=False) is None
    assert upscalers.find("lanczos", files, latent=False, case_sensitive=False).kind == "lanczos"
    assert upscalers.find("R-ESRGAN 2x+", files, latent=False).file == "RealESRGAN_x2plus.pth"


def _safetensors(path, tensors: dict[str, list[int]], metadata: dict[str, str] | None = None) -> None:
    header: dict = {"__metadata__": metadata or {}}
    offset = 0
    for name, shape in tensors.items():
        size = 4
        for d in shape:
            size *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)


def test_embedding_summary_reads_shapes_from_the_file(tmp_path):
    _safetensors(tmp_path / "sd15.safetensors", {"emb_params": [8, 768]})
    _safetensors(tmp_path / "sdxl.safetensors", {"clip_g": [4, 1280], "clip_l": [4, 768]})
    torch.save({"string_to_param": {"*": torch.zeros(3, 768)}, "step": 500, "sd_checkpoint": "abc",
                "sd_checkpoint_name": "model"}, tmp_path / "old.pt")
    torch.save({"<tok>": torch.zeros(768)}, tmp_path / "diffusers.bin")
    assert model_files.embedding_summary(tmp_path / "sd15.safetensors") == {
        "step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 768, "vectors": 8}
    assert model_files.embedding_summary(tmp_path / "sdxl.safetensors")["shape"] == 2048
    assert model_files.embedding_summary(tmp_path / "old.pt") == {
        "step": 500, "sd_checkpoint": "abc", "sd_checkpoint_name": "model", "shape": 768, "vectors": 3}
    assert model_files.embedding_summary(tmp_path / "diffusers.bin")["vectors"] == 1
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", 2**40))
    with pytest.raises(ValueError, match="header"):
        model_files.embedding_summary(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("size,target", [((640, 480), (512, 512)), ((300, 500), (512, 256)), ((3, 1000), (64, 64)),
                                         ((1000, 3), (64, 64)), ((7, 5), (512, 512)), ((513, 511), (512, 512)),
                                         ((128, 320), (64, 64)), ((146, 300), (133, 84)), ((4000, 9), (300, 200)),
                                         ((9, 4000), (200, 300)), ((2000, 7), (64, 96))])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_crop_and_resize_is_pillows_whole_resize_cropped(size, target, mode):
    # A1111 scales the whole image to cover the target, then pastes it centred
    from PIL import Image

    from bridge.adapters.a1111 import imaging
    from bridge.adapters.a1111.imaging import resize_image

    rng = np.random.default_rng(sum(size))
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)).convert(mode)
    (w, h), (tw, th) = size, target
    src_w = tw if tw / th > w / h else w * th // h
    src_h = th if tw / th <= w / h else h * tw // w
    # A1111's steps as images.resize_image writes them: the whole picture scaled, pasted centred on a new one
    whole = Image.new(mode, (tw, th))
    whole.paste(im.resize((src_w, src_h), Image.LANCZOS), box=(tw // 2 - src_w // 2, th // 2 - src_h // 2))
    got = resize_image(1, im, tw, th)
    assert got.size == target and got.mode == mode
    # the same pixels; where only the part that shows is scaled (a thin picture), within 2 levels, for RGBA in the
    # premultiplied colours Pillow resamples (a nearly transparent pixel's own colour rounds to few levels)
    exact = src_w * src_h <= imaging.COVER_LIMIT * tw * th
    if mode == "RGBA":
        got, whole = got.convert("RGBa"), whole.convert("RGBa")
    assert np.abs(np.asarray(got, np.int16) - np.asarray(whole, np.int16)).max() <= (0 if exact else 2)


def test_crop_and_resize_never_scales_a_thin_image_to_gigapixels(monkeypatch):
    from PIL import Image

    from bridge.adapters.a1111.imaging import resize_image

    sizes = []
    resize = Image.Image.resize

    def spy(self, size, *args, **kwargs):
        sizes.append(size)
        assert size[0] * size[1] <= 4 * 512 * 512, size  # 16384x1 covering 512x512 was 8388608x512 (16 GiB)
        return resize(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    out = resize_image(1, Image.new("RGB", (16384, 1), (200, 10, 10)), 512, 512)
    assert out.size == (512, 512) and out.getpixel((256, 256)) == (200, 10, 10) and sizes
