"""The Axera LCM pipeline on tiny ONNX models, checked against an independent float64 implementation of the
reference formulas (tests/support/tiny_axera.py builds the models)."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from pixart_nodes.core.axera import lcm
from pixart_nodes.core.axera.pipeline import AxeraPipeline, prepare_init_image, resolve_model_dir
from tests.support.tiny_axera import build_tiny_axera, tiny_axera_dir  # noqa: F401  (fixture)

T = [999, 759, 499, 259]


def ref_alphas_cumprod() -> np.ndarray:
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas)


def ref_step(latent, eps, t, prev_t, noise):
    acp = ref_alphas_cumprod()
    s = 10.0 * t
    c_skip = 0.25 / (s * s + 0.25)
    c_out = s / np.sqrt(s * s + 0.25)
    x0 = (latent - np.sqrt(1 - acp[t]) * eps) / np.sqrt(acp[t])
    denoised = c_out * x0 + c_skip * latent
    if noise is None:
        return denoised
    return np.sqrt(acp[prev_t]) * denoised + np.sqrt(1 - acp[prev_t]) * noise


class Reference:
    """Drives the ONNX models with onnxruntime directly and does the schedule in float64."""

    def __init__(self, folder):
        import onnxruntime as ort

        def open_(p):
            return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])

        self.te = open_(folder / "text_encoder" / "sd15_text_encoder_sim.onnx")
        self.unet = open_(folder / "unet.onnx")
        self.dec = open_(folder / "vae_decoder.onnx")
        self.enc = open_(folder / "vae_encoder.onnx")
        self.time = np.load(folder / "time_input_txt2img.npy")

    def embeds(self, ids):
        return self.te.run(None, {"input_ids": ids.astype(np.int32)[None]})[0]

    def loop(self, latent, emb, first, gen):
        steps = T[first:]
        for i, t in enumerate(steps):
            eps = self.unet.run(None, {
                "sample": latent.astype(np.float32),
                "/down_blocks.0/resnets.0/act_1/Mul_output_0": self.time[first + i][None].astype(np.float32),
                "encoder_hidden_states": emb,
            })[0].astype(np.float64)
            last = i == len(steps) - 1
            noise = None if last else torch.randn(latent.shape, generator=gen).numpy().astype(np.float64)
            latent = ref_step(latent, eps, t, t if last else steps[i + 1], noise)
        return latent

    def decode(self, latent):
        img = self.dec.run(None, {"x": (latent / 0.18215).astype(np.float32)})[0][0].transpose(1, 2, 0)
        return np.round(np.clip(img.astype(np.float64) / 2 + 0.5, 0, 1) * 255).astype(np.uint8)

    def txt2img(self, ids, seed):
        gen = torch.Generator().manual_seed(seed)
        latent = torch.randn((1, 4, 8, 8), generator=gen).numpy().astype(np.float64)
        return self.decode(self.loop(latent, self.embeds(ids), 0, gen))

    def img2img(self, ids, image, first, seed):
        x = image.astype(np.float64) / 127.5 - 1
        moments = self.enc.run(None, {"image_sample": x.transpose(2, 0, 1)[None].astype(np.float32)})[0]
        mean, logvar = moments[:, :4].astype(np.float64), moments[:, 4:].astype(np.float64)
        post = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)).numpy()
        x0 = (mean + np.exp(0.5 * logvar) * post) * 0.18215
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(x0.shape, generator=gen).numpy()
        acp = ref_alphas_cumprod()[T[first]]
        latent = np.sqrt(acp) * x0 + np.sqrt(1 - acp) * noise
        return self.decode(self.loop(latent, self.embeds(ids), first, gen))


@pytest.fixture(scope="module")
def pipe(tiny_axera_dir):
    return AxeraPipeline(tiny_axera_dir, "onnxruntime")


def test_alphas_match_published_values_and_float64():
    acp = lcm.alphas_cumprod()
    assert acp.dtype == np.float32
    for t, value in {999: 0.004660, 759: 0.052213, 499: 0.277670, 259: 0.658976}.items():
        assert acp[t] == pytest.approx(value, abs=1.5e-6)  # published to 6 decimals
    np.testing.assert_allclose(acp, ref_alphas_cumprod(), rtol=2e-5)


def test_step_matches_formula_on_fixed_inputs():
    rng = np.random.default_rng(7)
    latent = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    eps = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    noise = rng.normal(size=(1, 4, 8, 8)).astype(np.float32)
    for i, t in enumerate(T):
        last = i == len(T) - 1
        prev = t if last else T[i + 1]
        got = lcm.step(latent, eps, t, prev, None if last else noise)
        want = ref_step(latent.astype(np.float64), eps.astype(np.float64), t, prev, None if last else noise)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    c_skip, c_out = lcm.boundary_coefficients(999)
    assert c_skip == pytest.approx(0.25 / (9990**2 + 0.25)) and 0 < 1 - c_out < 1e-7


@pytest.mark.parametrize("strength,first", [
    (0.0, 3), (0.2, 3), (0.35, 3), (0.36, 2), (0.5, 2), (0.6, 2), (0.61, 1), (0.85, 1), (0.86, 0), (1.0, 0)])
def test_strength_to_start_index(strength, first):
    assert lcm.start_index(strength) == first


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_strength_out_of_range_names_field(bad):
    with pytest.raises(ValueError, match="denoising_strength"):
        lcm.start_index(bad)


def test_txt2img_matches_independent_reference(pipe, tiny_axera_dir):
    ref = Reference(tiny_axera_dir)
    prompt = "a pixel art cat sitting on a red roof"
    got = pipe.txt2img(prompt, 1234)
    want = ref.txt2img(pipe.tokenizer.encode(prompt, 77), 1234)
    assert got.image.shape == (64, 64, 3) and got.image.dtype == np.uint8
    assert got.timesteps == T
    assert np.abs(got.image.astype(int) - want.astype(int)).max() <= 1
    assert got.image.std() > 2  # the tiny decoder draws something, not a flat field


@pytest.mark.parametrize("strength", [0.3, 0.5, 0.7, 0.9])
def test_img2img_matches_independent_reference(pipe, tiny_axera_dir, strength):
    ref = Reference(tiny_axera_dir)
    rng = np.random.default_rng(3)
    init = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    got = pipe.img2img("a castle", init, strength, 99)
    first = lcm.start_index(strength)
    want = ref.img2img(pipe.tokenizer.encode("a castle", 77), init, first, 99)
    assert got.timesteps == T[first:]
    assert np.abs(got.image.astype(int) - want.astype(int)).max() <= 1


def test_same_seed_same_image_and_inputs_matter(pipe):
    a = pipe.txt2img("a fox in the snow", 5).image
    assert np.array_equal(a, pipe.txt2img("a fox in the snow", 5).image)
    assert not np.array_equal(a, pipe.txt2img("a fox in the snow", 6).image)
    assert not np.array_equal(a, pipe.txt2img("a castle with dragons", 5).image)


def test_unet_gets_schedule_rows_and_exact_dtypes(pipe, monkeypatch):
    calls = []
    real_run = pipe.unet.run

    def spy(feed, output_names=None):
        calls.append({k: v.copy() for k, v in feed.items()})
        return real_run(feed, output_names)

    monkeypatch.setattr(pipe.unet, "run", spy)
    init = np.full((64, 64, 3), 128, np.uint8)
    for strength, first in [(0.2, 3), (0.5, 2), (0.8, 1), (1.0, 0)]:
        calls.clear()
        pipe.img2img("x", init, strength, 0)
        assert len(calls) == 4 - first
        for i, feed in enumerate(calls):
            assert np.array_equal(feed[lcm_time_name(pipe)][0], pipe.time_input[first + i])
            assert all(v.dtype == np.float32 for v in feed.values())
    calls.clear()
    pipe.txt2img("x", 0)
    assert [np.array_equal(c[lcm_time_name(pipe)][0], pipe.time_input[i]) for i, c in enumerate(calls)] == [True] * 4


def lcm_time_name(pipe) -> str:
    return pipe.unet_time.name


def test_progress_callback_per_step(pipe):
    seen = []
    pipe.txt2img("x", 1, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    seen.clear()
    pipe.img2img("x", np.zeros((64, 64, 3), np.uint8), 0.5, 1, on_step=lambda i, n: seen.append((i, n)))
    assert seen == [(1, 2), (2, 2)]


def test_timings_are_reported(pipe):
    g = pipe.img2img("x", np.zeros((64, 64, 3), np.uint8), 0.9, 1)
    d = g.timings.to_dict()
    assert len(d["unet_ms"]) == 4 and d["vae_encoder_ms"] > 0 and d["text_encoder_ms"] > 0
    parts = d["text_encoder_ms"] + d["vae_encoder_ms"] + d["unet_total_ms"] + d["vae_decoder_ms"]
    assert parts <= d["total_ms"] + 0.01


def test_int64_text_encoder_export_is_fed_int64(tmp_path, pipe):
    """The .onnx export of the text encoder takes int64 ids, the axmodel int32: the pipeline follows the model."""
    folder = build_tiny_axera(tmp_path / "m64", ids_dtype=np.int64)
    other = AxeraPipeline(folder, "onnxruntime")
    assert other.text_encoder.input("input_ids").dtype == np.int64
    # same builder seed, same weights: the image must not depend on the ids dtype
    assert np.array_equal(other.txt2img("a cat", 3).image, pipe.txt2img("a cat", 3).image)


def test_latent_size_comes_from_model(tmp_path):
    folder = build_tiny_axera(tmp_path / "wide", image_hw=(32, 48))
    p = AxeraPipeline(folder, "onnxruntime")
    assert (p.height, p.width, p.latent_shape) == (32, 48, (1, 4, 4, 6))
    assert p.txt2img("x", 0).image.shape == (32, 48, 3)
    assert p.img2img("x", np.zeros((100, 30, 3), np.uint8), 0.5, 0, "pad").image.shape == (32, 48, 3)


def test_concurrent_runs_give_sequential_results(pipe):
    want = {s: pipe.txt2img("a cat", s).image for s in range(4)}
    got = {}

    def work(s):
        got[s] = pipe.txt2img("a cat", s).image

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(np.array_equal(got[s], want[s]) for s in range(4))


def test_missing_model_and_folder_errors_name_the_field(tmp_path, tiny_axera_dir):
    with pytest.raises(FileNotFoundError, match="model_dir"):
        AxeraPipeline(tmp_path / "nope", "onnxruntime")
    folder = build_tiny_axera(tmp_path / "noenc", with_encoder=False)
    p = AxeraPipeline(folder, "onnxruntime")
    assert p.describe()["img2img"] is False
    with pytest.raises(RuntimeError, match="vae_encoder"):
        p.img2img("x", np.zeros((64, 64, 3), np.uint8), 0.5, 0)
    (folder / "unet.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="unet"):
        AxeraPipeline(folder, "onnxruntime")


def test_resolve_model_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("PIXART_AXERA_MODEL_DIR", raising=False)
    extra, default = tmp_path / "extra", tmp_path / "models" / "axera"
    search = [extra, default]
    assert resolve_model_dir("", search) == extra  # none exists: the first, so the error names it
    (default / "lcm512").mkdir(parents=True)
    assert resolve_model_dir("", search) == default
    assert resolve_model_dir("lcm512", search) == default / "lcm512"
    (extra / "lcm512").mkdir(parents=True)
    assert resolve_model_dir("lcm512", search) == extra / "lcm512"
    assert resolve_model_dir("other", search) == extra / "other"  # found nowhere: where the error says it looked
    assert resolve_model_dir("other", []) == Path("other")
    monkeypatch.setenv("PIXART_AXERA_MODEL_DIR", str(tmp_path / "env"))
    assert resolve_model_dir("", search) == tmp_path / "env"
    assert resolve_model_dir("/abs/path", search).as_posix() == "/abs/path"
    assert resolve_model_dir("lcm512", search) == extra / "lcm512"
    (tmp_path / "env" / "lcm512").mkdir(parents=True)  # one sub-folder per build there too
    assert resolve_model_dir("lcm512", search) == tmp_path / "env" / "lcm512"
    assert resolve_model_dir("other", search) == tmp_path / "env" / "other"
    monkeypatch.delenv("PIXART_AXERA_MODEL_DIR")
    with pytest.raises(ValueError, match="model_dir"):
        resolve_model_dir("", [])


# ---- init image fitting -----------------------------------------------------------------------------------


def test_resize_pad_puts_black_bars():
    wide = np.full((32, 64, 3), 200, np.uint8)  # 2:1 into 64x64: 64x32 band, 16 black rows above and below
    out = prepare_init_image(wide, (64, 64), "pad")
    assert out.shape == (64, 64, 3)
    assert (out[:16] == 0).all() and (out[48:] == 0).all()
    assert (out[17:47] == 200).all()


def test_resize_crop_keeps_centre():
    img = np.zeros((64, 128, 3), np.uint8)
    img[:, :32] = (255, 0, 0)
    img[:, 32:96] = (0, 255, 0)
    img[:, 96:] = (0, 0, 255)
    out = prepare_init_image(img, (64, 64), "crop")
    assert out.shape == (64, 64, 3)
    assert (np.abs(out[:, 2:-2].astype(int) - (0, 255, 0)) <= 2).all()


def test_resize_stretch_close_to_opencv():
    cv2 = pytest.importorskip("cv2")
    yy, xx = np.mgrid[0:40, 0:90]
    img = np.stack([xx * 2, yy * 5, (xx + yy)], axis=-1).astype(np.uint8)
    out = prepare_init_image(img, (64, 64), "stretch")
    ref = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LANCZOS4)
    assert out.shape == (64, 64, 3)
    assert np.abs(out.astype(int) - ref.astype(int))[4:-4, 4:-4].max() <= 3


def test_resize_rejects_bad_mode_and_image():
    with pytest.raises(ValueError, match="resize_mode"):
        prepare_init_image(np.zeros((8, 8, 3), np.uint8), (64, 64), "zoom")
    with pytest.raises(ValueError, match="image"):
        prepare_init_image(np.zeros((8, 8), np.uint8), (64, 64), "pad")
