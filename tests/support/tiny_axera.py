"""Tiny random-weight stand-ins for the Axera SD1.5-LCM model set, built at test time.

The real axmodels cannot run here, so these ONNX models carry the exact input and output names, ranks and dtypes
of the real exports (text encoder ``input_ids`` int32 [1,77] -> [1,77,768]; UNet ``sample``, the cut time-embedding
tensor and ``encoder_hidden_states``; VAE encoder ``image_sample`` -> mean||logvar; VAE decoder ``x``) at a small
spatial size (64x64 image, 8x8 latent by default). The tokenizer folder is a real CLIP-format vocab.json +
merges.txt trained with the ``tokenizers`` library on a small corpus, laid out in CLIP's id order.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TIME_INPUT = "/down_blocks.0/resnets.0/act_1/Mul_output_0"
HIDDEN = 768
TOKENS = 77
TIME_DIM = 1280

CORPUS = [
    "a pixel art cat sitting on a red roof at sunset",
    "a photograph of a red fox in the snow, highly detailed",
    "make this image look like a pencil sketch",
    "adult, face portrait photograph, 8k, realistic",
    "white background, white wall, bad anatomy, watermark, text",
    "cyberpunk cityscape, neon lights, futuristic architecture, digital art, concept art, detailed",
    "fantasy landscape, magical forest, ethereal lighting, digital painting",
    "a castle on a hill with dragons and a blue sky",
    "an astronaut riding a horse on the moon",
    "retro game sprite of a knight with a sword and shield",
]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_tokenizer(folder: Path, vocab_size: int = 700) -> Path:
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
    from tokenizers.models import BPE

    tok = Tokenizer(BPE(end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, end_of_word_suffix="</w>",
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    raw_merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in raw_merges]

    # CLIP's id order: 256 byte characters, the same with </w>, then one token per merge, then the specials
    base = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for token in base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n",
                                       encoding="utf-8")
    special = {"bos_token": {"content": "<|startoftext|>"}, "eos_token": {"content": "<|endoftext|>"},
               "pad_token": "<|endoftext|>", "unk_token": {"content": "<|endoftext|>"}}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"model_max_length": TOKENS, "tokenizer_class": "CLIPTokenizer", "do_lower_case": True}), encoding="utf-8")
    return folder


def _save(model, path: Path) -> None:
    import onnx

    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def _model(nodes, inputs, outputs, inits, name):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _init(name: str, array: np.ndarray):
    from onnx import numpy_helper

    return numpy_helper.from_array(array, name)


def build_text_encoder(path: Path, vocab_size: int, rng: np.random.Generator, ids_dtype=np.int32) -> None:
    """Token embedding + position embedding, a causal running mean (so each position sees the tokens before it,
    like CLIP's causal attention), then tanh."""
    from onnx import TensorProto, helper

    elem = TensorProto.INT32 if np.dtype(ids_dtype) == np.int32 else TensorProto.INT64
    tok_emb = rng.normal(0, 1, (vocab_size, HIDDEN)).astype(np.float32)
    pos_emb = rng.normal(0, 0.1, (TOKENS, HIDDEN)).astype(np.float32)
    causal = np.tril(np.ones((TOKENS, TOKENS), np.float32))
    causal /= causal.sum(axis=1, keepdims=True)
    nodes = [
        helper.make_node("Gather", ["tok_emb", "input_ids"], ["emb"], axis=0),
        helper.make_node("Add", ["emb", "pos_emb"], ["emb_pos"]),
        helper.make_node("MatMul", ["causal", "emb_pos"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["last_hidden_state"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("input_ids", elem, [1, TOKENS])],
        [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, TOKENS, HIDDEN])],
        [_init("tok_emb", tok_emb), _init("pos_emb", pos_emb), _init("causal", causal)],
        "tiny_text_encoder",
    )
    _save(model, path)


def build_unet(path: Path, latent_hw: tuple[int, int], rng: np.random.Generator) -> None:
    """eps = tanh(conv3x3(sample) + proj(time) + proj(mean over tokens of text)): depends on all three inputs."""
    from onnx import TensorProto, helper

    h, w = latent_hw
    conv_w = rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32)
    conv_b = np.zeros(4, np.float32)
    time_w = rng.normal(0, 0.05, (TIME_DIM, 4)).astype(np.float32)
    text_w = rng.normal(0, 0.1, (HIDDEN, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["sample", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("MatMul", [TIME_INPUT, "time_w"], ["tp"]),
        helper.make_node("Reshape", ["tp", "shape4"], ["tp4"]),
        helper.make_node("ReduceMean", ["encoder_hidden_states"], ["pooled"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["pooled", "text_w"], ["ep"]),
        helper.make_node("Reshape", ["ep", "shape4"], ["ep4"]),
        helper.make_node("Add", ["c", "tp4"], ["s1"]),
        helper.make_node("Add", ["s1", "ep4"], ["s2"]),
        helper.make_node("Tanh", ["s2"], ["noise_pred"]),
    ]
    model = _model(
        nodes,
        [
            helper.make_tensor_value_info("sample", TensorProto.FLOAT, [1, 4, h, w]),
            helper.make_tensor_value_info(TIME_INPUT, TensorProto.FLOAT, [1, TIME_DIM]),
            helper.make_tensor_value_info("encoder_hidden_states", TensorProto.FLOAT, [1, TOKENS, HIDDEN]),
        ],
        [helper.make_tensor_value_info("noise_pred", TensorProto.FLOAT, [1, 4, h, w])],
        [_init("conv_w", conv_w), _init("conv_b", conv_b), _init("time_w", time_w), _init("text_w", text_w),
         _init("shape4", np.array([1, 4, 1, 1], np.int64))],
        "tiny_unet",
    )
    _save(model, path)


def build_vae_decoder(path: Path, latent_hw: tuple[int, int], rng: np.random.Generator) -> None:
    """1x1 conv to RGB, nearest x8 upsampling, 3x3 smoothing conv, tanh: output in [-1, 1] like the real decoder."""
    from onnx import TensorProto, helper

    h, w = latent_hw
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["rgb"]),
        helper.make_node("Resize", ["rgb", "", "scales"], ["up"], mode="nearest"),
        helper.make_node("Conv", ["up", "w2", "b2"], ["smooth"], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["smooth"], ["image"]),
    ]
    w2 = np.zeros((3, 3, 3, 3), np.float32)
    for c in range(3):
        w2[c, c] = 1.0 / 9.0
    model = _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, h, w])],
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, h * 8, w * 8])],
        [_init("w1", rng.normal(0, 0.2, (3, 4, 1, 1)).astype(np.float32)), _init("b1", np.zeros(3, np.float32)),
         _init("scales", np.array([1, 1, 8, 8], np.float32)), _init("w2", w2), _init("b2", np.zeros(3, np.float32))],
        "tiny_vae_decoder",
    )
    _save(model, path)


def build_vae_encoder(path: Path, latent_hw: tuple[int, int], rng: np.random.Generator) -> None:
    """8x8 average pooling then a 1x1 conv to 8 channels: 4 means and 4 log-variances (around -6)."""
    from onnx import TensorProto, helper

    h, w = latent_hw
    weight = rng.normal(0, 0.5, (8, 3, 1, 1)).astype(np.float32)
    weight[4:] *= 0.1
    bias = np.concatenate([np.zeros(4), np.full(4, -6.0)]).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["image_sample"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Conv", ["pooled", "w", "b"], ["latent_sample"]),
    ]
    model = _model(
        nodes,
        [helper.make_tensor_value_info("image_sample", TensorProto.FLOAT, [1, 3, h * 8, w * 8])],
        [helper.make_tensor_value_info("latent_sample", TensorProto.FLOAT, [1, 8, h, w])],
        [_init("w", weight), _init("b", bias)],
        "tiny_vae_encoder",
    )
    _save(model, path)


def build_time_inputs(folder: Path, rng: np.random.Generator) -> None:
    """SiLU-shaped rows like the real tables; the img2img file repeats rows 2-3 and has zero rows 2-3, as shipped."""
    pre = rng.normal(0, 1.5, (4, TIME_DIM)).astype(np.float32)
    txt = (pre / (1 + np.exp(-pre))).astype(np.float32)
    img = np.zeros_like(txt)
    img[:2] = txt[2:]
    np.save(folder / "time_input_txt2img.npy", txt)
    np.save(folder / "time_input_img2img.npy", img)


def build_tiny_axera(folder: Path, image_hw: tuple[int, int] = (64, 64), seed: int = 1234,
                     ids_dtype=np.int32, with_encoder: bool = True) -> Path:
    """A complete model folder in the Axera release layout, with .onnx models."""
    rng = np.random.default_rng(seed)
    latent_hw = (image_hw[0] // 8, image_hw[1] // 8)
    folder.mkdir(parents=True, exist_ok=True)
    build_tokenizer(folder / "tokenizer")
    vocab_size = len(json.loads((folder / "tokenizer" / "vocab.json").read_text(encoding="utf-8")))
    build_text_encoder(folder / "text_encoder" / "sd15_text_encoder_sim.onnx", vocab_size, rng, ids_dtype)
    (folder / "text_encoder" / "config.json").write_text(json.dumps({"hidden_size": HIDDEN}), encoding="utf-8")
    build_unet(folder / "unet.onnx", latent_hw, rng)
    build_vae_decoder(folder / "vae_decoder.onnx", latent_hw, rng)
    if with_encoder:
        build_vae_encoder(folder / "vae_encoder.onnx", latent_hw, rng)
    build_time_inputs(folder, rng)
    return folder


@pytest.fixture(scope="session")
def tiny_axera_dir(tmp_path_factory) -> Path:
    """A 64x64 tiny Axera model folder shared by the session."""
    return build_tiny_axera(tmp_path_factory.mktemp("axera") / "models")


def axera_build(models_root: Path, folder: Path, name: str = "tiny64") -> str:
    """``folder`` as the build ``name`` of the Axera model folder under ``models_root`` (the tiny models' root, an
    ``axera:`` folder of the test ComfyUI's extra_model_paths.yaml): the sub-folder name requests give."""
    link = models_root / "axera" / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():  # a cached models root keeps the last session's link
        link.unlink()
    link.symlink_to(folder, target_is_directory=True)
    return name
