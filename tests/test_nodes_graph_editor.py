"""Node-pack defects an artist meets in the graph editor, each pinned by the call ComfyUI makes."""
from __future__ import annotations

import pytest
import torch


def _palette_widgets(**changes):
    # what ComfyUI hands IS_CHANGED: the widget values only (linked inputs such as image are left out)
    values = {"source": "file", "name": "pico-8", "hex_colors": "#000000 #ffffff", "file": "mine.hex",
              "n_colors": 16, "method": "kmeans", "seed": 0, "search": "", "for_dithering": False}
    return {**values, **changes}


def test_palette_file_edited_on_disk_is_read_again(tmp_path, monkeypatch):
    """ComfyUI reuses a node's last output while its inputs and IS_CHANGED stay equal; an artist who edits
    mine.hex and queues again must get the new colours, as LoadImage re-reads an image file changed on disk."""
    import pixart_nodes.nodes_palette as nodes_palette
    from pixart_nodes.nodes_palette import PixartPalette

    monkeypatch.setattr(nodes_palette, "_PACK_PALETTES", tmp_path)
    palette_file = tmp_path / "mine.hex"
    palette_file.write_text("123456\n")
    before = PixartPalette.IS_CHANGED(**_palette_widgets())
    assert PixartPalette.IS_CHANGED(**_palette_widgets()) == before  # unchanged file: the cached output stays
    palette_file.write_text("123456\nabcdef\n")
    assert PixartPalette.IS_CHANGED(**_palette_widgets()) != before
    # the other sources depend on nothing outside the graph: their outputs stay cached
    named = PixartPalette.IS_CHANGED(**_palette_widgets(source="named"))
    assert named == PixartPalette.IS_CHANGED(**_palette_widgets(source="named"))
    # a missing file: run again (and fail there, naming the field) rather than reuse an old palette
    missing = PixartPalette.IS_CHANGED(**_palette_widgets(file="gone.hex"))
    assert missing != missing
    # a linked input comes as None: a linked source still watches the file, a linked file runs the node each time
    assert PixartPalette.IS_CHANGED(**_palette_widgets(source=None)) == PixartPalette.IS_CHANGED(**_palette_widgets())
    linked = PixartPalette.IS_CHANGED(**_palette_widgets(file=None))
    assert linked != linked


def _ksampler_noise(shape, seed, batch_index=None):
    """comfy.sample.prepare_noise as ComfyUI 0.3.64 writes it: with a batch_index (Latent From Batch, Repeat Latent
    Batch, Rebatch Latents) each image's noise is its own draw, the draws numbered 0..max(batch_index)."""
    generator = torch.manual_seed(seed)
    if batch_index is None:
        return torch.randn(shape, generator=generator, device="cpu")
    draws = [torch.randn([1, *shape[1:]], generator=generator, device="cpu") for _ in range(max(batch_index) + 1)]
    return torch.cat([draws[i] for i in batch_index])


@pytest.mark.parametrize("batch_index", [[2], [1, 1], [0, 3]])
def test_noise_latent_follows_the_latents_batch_index_as_ksampler_does(batch_index):
    """The node promises KSampler's own noise for the seed; for the image picked by Latent From Batch (a latent
    with a batch_index) KSampler draws the noise of that index, so the 'latent noise' fill must too."""
    from pixart_nodes.nodes_latent import PixartNoiseLatent

    shape = (len(batch_index), 4, 5, 7)  # odd sizes: a batch drawn at once differs from draws one by one
    state = torch.get_rng_state()
    try:
        expected = _ksampler_noise(shape, 42, batch_index)
    finally:
        torch.set_rng_state(state)
    (out,) = PixartNoiseLatent().run({"samples": torch.zeros(shape), "batch_index": batch_index}, 42)
    assert torch.equal(out["samples"], expected)


@pytest.mark.parametrize("widgets, field", [
    ({"max_cell_size": 1.5}, "max_cell_size"),  # the widget goes down to 0.5 in its steps
    ({"min_cell_size": 8.0, "max_cell_size": 4.0}, "max_cell_size"),
    ({"min_cell_size": float("inf")}, "min_cell_size"),
])
def test_snap_to_grid_errors_name_the_widget_the_artist_set(widgets, field):
    """An error must name an input the node shows; the core's own argument names (min_size, max_size) are not
    on the node."""
    from pixart_nodes.nodes_pixelate import PixartSnapToGrid

    image = torch.rand((1, 16, 16, 3), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=f"^{field}: ") as err:
        PixartSnapToGrid().run(image, **widgets)
    assert "min_size" not in str(err.value) and "max_size" not in str(err.value)


def test_cleanup_bad_background_colour_names_the_widget():
    from pixart_nodes.nodes_cleanup import PixartCleanup

    image = torch.rand((2, 8, 8, 3), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="^background_colour: .*#rrggbb"):
        PixartCleanup().run(image, background="colour", background_colour="red")
    # only read when the background mode uses it, as the tooltip says
    PixartCleanup().run(image, background="auto", background_colour="red")


def test_cleanup_background_colour_given_becomes_transparent():
    # the node hands the core the colour it parsed (a key): the pixels of that colour, and no others, go clear
    from pixart_nodes.nodes_cleanup import PixartCleanup

    image = torch.zeros((1, 8, 8, 3))
    image[0, 2:6, 2:6] = torch.tensor([1.0, 0.5, 0.0])
    image[0, :, :, 2] += 48 / 255
    _, mask, report = PixartCleanup().run(image, isolated=False, jaggies=False, background="colour",
                                          background_colour="#000030")["result"]
    assert (mask[0, 2:6, 2:6] == 0).all() and int(mask[0].sum()) == 64 - 16
    assert "background #000030" in report


def test_rgb565_preview_of_the_wrong_size_names_the_inputs():
    """A frame pasted with the wrong width/height: the error must name inputs the node shows, not 'data'."""
    from pixart_nodes.nodes_rgb565 import PixartRGB565Preview

    frame = "AAAA" * 8  # 24 bytes: a 4x3 frame
    assert PixartRGB565Preview().run(frame, 4, 3, "big", False)[0].shape == (1, 3, 4, 3)
    with pytest.raises(ValueError, match=r"^rgb565_base64: expected 32 bytes for 4x4 RGB565, got 24$"):
        PixartRGB565Preview().run(frame, 4, 4, "big", False)


def test_save_indexed_frame_ms_widget_offers_only_delays_a_gif_keeps():
    # the widget let an artist pick 10 ms (and any millisecond), which the GIF stores as 20 (and hundredths): every
    # value its min and step offer is the delay stored
    import io

    import numpy as np
    from PIL import Image

    from pixart_nodes.core import indexed
    from pixart_nodes.core import palette as pal
    from pixart_nodes.nodes_save import PixartSaveIndexed

    opts = PixartSaveIndexed.INPUT_TYPES()["required"]["frame_ms"][1]
    frames = [np.zeros((2, 2, 3), np.uint8)] * 2
    for ms in range(opts["min"], 200, opts.get("step", 1)):
        data = indexed.indexed_gif(frames, pal.palette_from_hex("#000 #fff"), duration_ms=ms)
        assert Image.open(io.BytesIO(data)).info["duration"] == ms
