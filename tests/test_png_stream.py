"""Row-streamed PNG decoding (rs4m.png_stream): every filter type and colour type gives Pillow's pixels, windows
equal the whole decode's in any order, unsupported PNGs fall back to the whole decode, broken ones are errors,
and a streamed scene's tiles are the whole decode's tiles."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import rs4m
from rs4m import png_stream
from rs4m.errors import BadInput
from rs4m.layout import OutputLayout
from rs4m.png_stream import PngRows, StreamedImage
from rs4m.raster import open_scene
from rs4m.sources import SceneRef

CHANNELS = {0: 1, 2: 3, 3: 1, 6: 4}


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))


def _paeth(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def filter_row(row: np.ndarray, prev: np.ndarray, kind: int, bpp: int) -> np.ndarray:
    """One scanline's samples (flat uint8) filtered with PNG filter ``kind`` against ``prev`` (the PNG spec)."""
    x, b = row.astype(np.int32), prev.astype(np.int32)
    a = np.concatenate([np.zeros(bpp, np.int32), x[:-bpp]])
    c = np.concatenate([np.zeros(bpp, np.int32), b[:-bpp]])
    predictor = {0: 0, 1: a, 2: b, 3: (a + b) // 2, 4: _paeth(a, b, c)}.get(kind, 0)
    return ((x - predictor) % 256).astype(np.uint8)


def png_bytes(samples: np.ndarray, colour: int, filters: list[int], plte: bytes | None = None,
              trns: bytes | None = None, idat_size: int = 0, depth: int = 8, interlace: int = 0) -> bytes:
    """A PNG of ``samples`` ``[h, w, channels]`` whose row ``i`` is filtered with ``filters[i]`` (a type > 4 is
    written as that byte over unfiltered samples), its data in IDAT chunks of ``idat_size`` bytes (0: one)."""
    h, w, ch = samples.shape
    flat, prev, lines = samples.reshape(h, w * ch), np.zeros(w * ch, np.uint8), []
    for i in range(h):
        lines.append(bytes([filters[i]]) + filter_row(flat[i], prev, filters[i], ch).tobytes())
        prev = flat[i]
    data = zlib.compress(b"".join(lines), 6)
    size = idat_size or len(data)
    out = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, interlace))
    out += _chunk(b"tEXt", b"Comment\x00made by the test")
    out += (_chunk(b"PLTE", plte) if plte is not None else b"") + (_chunk(b"tRNS", trns) if trns is not None else b"")
    out += b"".join(_chunk(b"IDAT", data[i:i + size]) for i in range(0, len(data), size))
    return out + _chunk(b"IEND", b"")


def samples_for(colour: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth ramps plus noise (so every filter has work), in the sample layout of ``colour``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    ramps = [(xx * 3 + yy) % 256, (yy * 5) % 256, (xx * yy) % 256, np.where(rng.random((h, w)) < 0.3, 0, 200)]
    out = np.stack(ramps[:CHANNELS[colour]], -1) + rng.integers(0, 9, (h, w, CHANNELS[colour]))
    return (out % 256).astype(np.uint8)


def all_rows(data: bytes, grey: bool = False) -> np.ndarray:
    rows = PngRows(io.BytesIO(data), None, grey)
    h = rows.header
    out = np.empty((h.height, h.width, h.channels), np.uint8)
    rows.read_into(out)
    return out


def row_filters(h: int, seed: int = 1) -> list[int]:
    """Every type, in runs and mixed: the first rows one type each, then random."""
    rng = np.random.default_rng(seed)
    return [0, 1, 2, 3, 4, 4, 3, 3, 2, 1, 1, 0] + [int(v) for v in rng.integers(0, 5, h)][: h - 12]


PALETTE = bytes(range(0, 240, 3)) * 3  # 80 entries: indices above 79 are beyond the PLTE


@pytest.mark.parametrize("colour", [2, 6, 3, 0])
@pytest.mark.parametrize("width", [1, 37, 131])
@pytest.mark.parametrize("idat_size", [0, 97])
def test_every_filter_and_colour_type_gives_pillows_pixels(colour, width, idat_size):
    h = 150  # crosses the unfilter pieces (UNFILTER_ROWS) twice, with every filter on either side of a seam
    samples = samples_for(colour, h, width)
    data = png_bytes(samples, colour, row_filters(h), plte=PALETTE if colour == 3 else None, idat_size=idat_size)
    pillow = np.asarray(Image.open(io.BytesIO(data))).reshape(h, width, CHANNELS[colour])  # P: the indices
    assert np.array_equal(pillow, samples)  # the test's encoder is right
    assert np.array_equal(all_rows(data, grey=colour == 0), pillow)


def test_rows_in_pieces_equal_rows_at_once():
    samples = samples_for(2, 200, 53, seed=4)
    data = png_bytes(samples, 2, row_filters(200, seed=5))
    rows = PngRows(io.BytesIO(data))
    parts = []
    for n in (1, 63, 64, 65, 7):
        part = np.empty((n, 53, 3), np.uint8)
        rows.read_into(part)
        parts.append(part)
    assert np.array_equal(np.concatenate(parts), samples[:200])


def pillow_pngs(folder: Path) -> dict[str, SceneRef]:
    """PNGs as Pillow writes them (its own filter choice): RGB, RGBA with transparent pixels, palettes with and
    without tRNS (one transparent entry, and an alpha per entry), grey read as R = G = B."""
    rng = np.random.default_rng(7)
    h, w = 301, 203
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx + yy) % 256, (xx * 2) % 256, (yy * 3) % 256], -1) + rng.integers(0, 20, (h, w, 3))
    rgb = (rgb % 256).astype(np.uint8)
    rgba = np.concatenate([rgb, np.where(rng.random((h, w, 1)) < 0.2, 0, 255).astype(np.uint8)], -1)
    Image.fromarray(rgb).save(folder / "rgb.png")
    Image.fromarray(rgba, "RGBA").save(folder / "rgba.png")
    index = ((xx // 7 + yy // 5) % 40).astype(np.uint8)  # over 16 colours: Pillow writes 8 bits a pixel
    pal = Image.fromarray(index, "P")
    pal.putpalette(list(rng.integers(0, 256, 120)))
    pal.save(folder / "pal.png")
    pal.save(folder / "pal_one.png", transparency=3)
    pal.save(folder / "pal_alpha.png", transparency=bytes([0, 80, 255, 0, 17]))
    Image.fromarray(rgb[..., 1]).save(folder / "grey.png")
    refs = {name: SceneRef(name) for name in ("rgb.png", "rgba.png", "pal.png", "pal_one.png", "pal_alpha.png")}
    refs["grey.png"] = SceneRef("grey.png", rgb_bands=(1, 1, 1))  # as the scan records grey="replicate"
    return refs


WINDOWS = [(0, 0, 64, 64), (37, 11, 100, 53), (136, 87, 67, 33), (0, 0, 203, 120), (150, 250, 53, 51),
           (0, 100, 203, 201), (5, 299, 10, 2)]


@pytest.mark.parametrize("order", ["top-row", "any"])
def test_streamed_windows_equal_whole_decode_windows(tmp_path, order):
    windows = sorted(WINDOWS, key=lambda w: w[1]) if order == "top-row" else WINDOWS  # "any": restarts
    for name, ref in pillow_pngs(tmp_path).items():
        with open_scene(tmp_path, ref) as whole, \
                open_scene(tmp_path, ref, window_rows=201, stream_min_pixels=1) as streamed:
            assert streamed.row_ordered and not whole.row_ordered, name
            for win in windows:
                (rgb_a, valid_a), (rgb_b, valid_b) = whole.read_window(*win), streamed.read_window(*win)
                assert np.array_equal(rgb_a, rgb_b) and np.array_equal(valid_a, valid_b), (name, win)
                assert rgb_b.flags.c_contiguous and valid_b.flags.c_contiguous


def test_masks_of_transparent_pngs_are_not_trivial(tmp_path):
    """The comparison above means something: the streamed masks of the transparent files have holes."""
    refs = pillow_pngs(tmp_path)
    for name in ("rgba.png", "pal_one.png", "pal_alpha.png"):
        with open_scene(tmp_path, refs[name], window_rows=301, stream_min_pixels=1) as r:
            valid = r.read_window(0, 0, 203, 301)[1]
            assert 0 < valid.mean() < 1, name


def test_palette_indices_beyond_the_plte_match_pillow(tmp_path):
    samples = (np.arange(256 * 3, dtype=np.uint32).reshape(3, 256, 1) % 256).astype(np.uint8)
    plte = bytes(range(30))  # 10 entries
    (tmp_path / "p.png").write_bytes(png_bytes(samples, 3, [0, 4, 3], plte=plte, trns=b"\x00\x80"))
    with open_scene(tmp_path, SceneRef("p.png")) as whole, \
            open_scene(tmp_path, SceneRef("p.png"), window_rows=3, stream_min_pixels=1) as streamed:
        a, b = whole.read_window(0, 0, 256, 3), streamed.read_window(0, 0, 256, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and not b[1].all()


@pytest.mark.parametrize("case", ["16-bit", "4-bit palette", "grey tRNS", "small"])
def test_unsupported_or_small_pngs_are_decoded_whole(tmp_path, case):
    ref, rows, min_pixels = SceneRef("f.png"), 40, 1
    if case == "16-bit":
        Image.fromarray(samples_for(0, 40, 30)[..., 0].astype(np.uint16) * 257).save(tmp_path / "f.png")
        ref = SceneRef("f.png", rgb_bands=(1, 1, 1))
    elif case == "4-bit palette":
        img = Image.fromarray((samples_for(0, 40, 30)[..., 0] % 16), "P")
        img.putpalette(list(range(48)))
        img.save(tmp_path / "f.png", bits=4)
    elif case == "grey tRNS":
        data = png_bytes(samples_for(0, 40, 30), 0, [1] * 40, trns=b"\x00\x07")
        (tmp_path / "f.png").write_bytes(data)
        ref = SceneRef("f.png", rgb_bands=(1, 1, 1))
    else:
        Image.fromarray(samples_for(2, 40, 30)).save(tmp_path / "f.png")
        min_pixels = 40 * 30 + 1
    with open_scene(tmp_path, ref) as whole, \
            open_scene(tmp_path, ref, window_rows=rows, stream_min_pixels=min_pixels) as r:
        assert not r.row_ordered
        assert all(np.array_equal(a, b) for a, b in zip(whole.read_window(3, 5, 20, 30),
                                                        r.read_window(3, 5, 20, 30), strict=True))


def test_unsupported_reasons():
    header = png_stream.PngHeader(10, 10, 8, 2, 0)
    assert png_stream.unsupported_reason(header, grey=False) is None
    assert "interlaced" in png_stream.unsupported_reason(png_stream.PngHeader(10, 10, 8, 2, 1), False)
    assert "bit depth 16" in png_stream.unsupported_reason(png_stream.PngHeader(10, 10, 16, 6, 0), False)
    assert "alpha" in png_stream.unsupported_reason(png_stream.PngHeader(10, 10, 8, 4, 0), True)
    interlaced = png_bytes(samples_for(2, 8, 8), 2, [0] * 8, interlace=1)  # the data need not be Adam7 here
    assert png_stream.probe(io.BytesIO(interlaced), grey=False) is None


def _broken(kind: str) -> bytes:
    samples = samples_for(2, 120, 45, seed=9)
    filters = row_filters(120)
    if kind == "filter byte":
        filters[100] = 7
    data = png_bytes(samples, 2, filters, idat_size=1000)
    if kind == "truncated":
        return data[: len(data) * 6 // 10]
    if kind == "CRC":
        at = data.index(b"IDAT", len(data) // 2) + 10  # inside a later IDAT chunk's data
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]
    if kind == "deflate":  # garbage compressed data under a correct CRC
        start = data.index(b"IDAT") - 4
        length = struct.unpack(">I", data[start:start + 4])[0]
        return data[:start] + _chunk(b"IDAT", b"\xff" * length) + data[start + 12 + length:]
    return data


@pytest.mark.parametrize("kind,reason", [("truncated", "the file ends inside"), ("CRC", "CRC of a IDAT chunk"),
                                         ("filter byte", "row 100 has filter type 7"),
                                         ("deflate", "compressed image data is invalid")])
def test_broken_pngs_are_errors_with_a_reason(tmp_path, kind, reason):
    (tmp_path / "b.png").write_bytes(_broken(kind))
    with open_scene(tmp_path, SceneRef("b.png"), window_rows=60, stream_min_pixels=1) as r, \
            pytest.raises(BadInput, match="truncated or corrupt") as err:
        assert r.row_ordered
        for y in (0, 60):
            r.read_window(0, y, 45, 60)
    assert reason in err.value.reason


def test_a_complete_file_is_checked_to_its_last_image_chunk():
    data = _broken("none")
    at = data.rindex(b"IEND") - 6  # the last IDAT chunk's CRC
    damaged = data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]
    with pytest.raises(BadInput, match="CRC"):
        all_rows(damaged)
    assert all_rows(data).shape == (120, 45, 3)


def test_streamed_image_drops_rows_above_the_window():
    data = png_bytes(samples_for(2, 900, 20), 2, row_filters(900))
    image = StreamedImage(lambda: (PngRows(io.BytesIO(data)), lambda: None))
    for y in [*range(0, 900 - 64, 64), 900 - 64]:
        image.window(0, y, 20, 64)
        band = image._band  # the bound is the point: no view keeps an older, larger buffer alive
        held = band if band.base is None else band.base
        assert len(band) <= 64 + png_stream.AHEAD_ROWS and held.nbytes <= (64 + png_stream.AHEAD_ROWS) * 20 * 3


def _scene(folder: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:700, 0:650]
    img = np.stack([(xx // 3) % 256, (yy // 2) % 256, (xx + yy) % 256], -1) + rng.integers(0, 30, (700, 650, 3))
    Image.fromarray((img % 256).astype(np.uint8)).save(folder / name)


def _tiles(out: Path) -> list[dict]:
    cols = ["tile_id", "scene_path", "x", "y", "width", "height", "sha256"]
    return [row for part in OutputLayout(out).tile_parts() for row in pq.read_table(part, columns=cols).to_pylist()]


@pytest.mark.parametrize("mode", ["grid", "random"])
def test_streamed_scenes_store_the_whole_decodes_tiles(tmp_path, monkeypatch, mode):
    src = tmp_path / "src"
    src.mkdir()
    _scene(src, "a.png", 1)
    (src / "b.png").write_bytes(_broken("filter byte"))  # fails alone, streamed, as an error row
    plan = rs4m.make_plan(sources=[f"folder={src}"], tile_size=128, mode=mode, crop_min=64, crop_max=256,
                          workers=1, keep_dropped=True)
    rs4m.build(tmp_path / "whole", plan, stages=["scan", "tile"])
    monkeypatch.setattr(png_stream, "STREAM_MIN_PIXELS", 1)
    rs4m.build(tmp_path / "streamed", plan, stages=["scan", "tile"])
    whole, streamed = _tiles(tmp_path / "whole"), _tiles(tmp_path / "streamed")
    assert sorted(map(str, whole)) == sorted(map(str, streamed)) and len(whole) > 20  # same tiles, same bytes
    assert [t["y"] for t in streamed] == sorted(t["y"] for t in streamed)  # stored by top row
    if mode == "random":
        assert [t["y"] for t in whole] != sorted(t["y"] for t in whole)  # so the stored order changed
    errors = pq.read_table(tmp_path / "streamed" / "errors.parquet").to_pylist()
    assert [(e["path"], e["stage"]) for e in errors] == [("b.png", "tile")]
    assert "row 100 has filter type 7" in errors[0]["reason"]


def test_the_budget_of_a_streamed_png_is_its_band(tmp_path):
    Image.fromarray(samples_for(2, 300, 200)).save(tmp_path / "s.png")
    header = png_stream.PngHeader(200, 300, 8, 2, 0)
    need = png_stream.stream_peak_bytes(header, 64)
    with pytest.raises(BadInput, match="row by row in windows of 64 rows.*max_scene_bytes"):
        open_scene(tmp_path, SceneRef("s.png"), window_rows=64, stream_min_pixels=1, max_scene_bytes=need - 1)
    with open_scene(tmp_path, SceneRef("s.png"), window_rows=64, stream_min_pixels=1, max_scene_bytes=need) as r:
        assert r.row_ordered and r.read_window(0, 0, 64, 64)[0].shape == (64, 64, 3)


def test_max_scene_bytes_is_a_checked_recipe_key(tmp_path):
    from rs4m.errors import ConfigError

    assert rs4m.make_plan(sources=[f"folder={tmp_path}"], max_scene_bytes=1 << 20).sources[0].spec.tile \
        .max_scene_bytes == 1 << 20
    with pytest.raises(ConfigError, match="max_scene_bytes must be at least 1"):
        rs4m.make_plan(sources=[f"folder={tmp_path}"], max_scene_bytes=0)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_pngs_inside_archives_are_streamed_in_place(tmp_path, kind):
    import tarfile
    import zipfile

    Image.fromarray(samples_for(2, 150, 90, seed=11)).save(tmp_path / "s.png")
    if kind == "zip":
        with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
            zf.write(tmp_path / "s.png", "d/s.png")
    else:
        with tarfile.open(tmp_path / "a.tar.gz", "w:gz") as tf:
            tf.add(tmp_path / "s.png", "d/s.png")
    ref = SceneRef(f"a.{kind}/d/s.png")
    with open_scene(tmp_path, SceneRef("s.png")) as whole, \
            open_scene(tmp_path, ref, window_rows=64, stream_min_pixels=1) as streamed:
        assert streamed.row_ordered
        for win in [(0, 0, 64, 64), (20, 60, 70, 64), (0, 86, 90, 64), (5, 5, 10, 10)]:
            assert np.array_equal(whole.read_window(*win)[0], streamed.read_window(*win)[0]), win


def _hostile(kind: str) -> tuple[bytes, np.ndarray]:
    """A 100×40 RGB PNG built by hand in a hostile shape, and its pixels."""
    samples = samples_for(2, 100, 40, seed=12)
    raw = b"".join(b"\x00" + samples[i].tobytes() for i in range(100))
    z, height, tail = zlib.compress(raw), 100, b""
    idat = [_chunk(b"IDAT", z)]
    if kind == "1-byte IDATs":
        idat = [_chunk(b"IDAT", z[i:i + 1]) for i in range(len(z))]
    elif kind == "empty IDATs":
        idat = [_chunk(b"IDAT", b""), _chunk(b"IDAT", z[:50]), _chunk(b"IDAT", b""), _chunk(b"IDAT", z[50:])]
    elif kind == "chunks after IEND":
        tail = _chunk(b"IDAT", b"\xff" * 50) + b"garbage"
    elif kind == "zlib trailing garbage":
        idat = [_chunk(b"IDAT", z + b"garbage")]
    elif kind == "fewer rows declared":
        height = 80
    elif kind == "more rows declared":
        height = 120
    elif kind == "zlib ends early":
        idat = [_chunk(b"IDAT", z[: len(z) // 2])]
    elif kind == "two zlib streams":
        idat = [_chunk(b"IDAT", zlib.compress(raw[:2000]) + zlib.compress(raw[2000:]))]
    elif kind == "huge chunk length":
        idat = [struct.pack(">I4s", 0x7FFFFFFF, b"IDAT") + z]
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 40, height, 8, 2, 0, 0, 0))
    return data + b"".join(idat) + _chunk(b"IEND", b"") + tail, samples[:height]


@pytest.mark.parametrize("kind", ["1-byte IDATs", "empty IDATs", "chunks after IEND", "zlib trailing garbage",
                                  "fewer rows declared"])
def test_hostile_but_decodable_pngs_give_their_declared_rows(kind):
    data, samples = _hostile(kind)
    assert np.array_equal(all_rows(data), samples)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), samples)  # as Pillow reads them


@pytest.mark.parametrize("kind,reason", [("more rows declared", "ends before row 120"),
                                         ("zlib ends early", "ends after 49 of its 100 rows"),
                                         ("two zlib streams", "ends before row 100"),
                                         ("huge chunk length", "the file ends inside a IDAT chunk")])
def test_hostile_pngs_are_errors_with_a_one_line_reason(tmp_path, kind, reason):
    data, _ = _hostile(kind)
    (tmp_path / "h.png").write_bytes(data)
    with pytest.raises(BadInput, match="truncated or corrupt PNG") as err:
        with open_scene(tmp_path, SceneRef("h.png"), window_rows=50, stream_min_pixels=1) as r:
            assert r.row_ordered
            r.read_window(0, 0, 40, 50)
            r.read_window(0, 50, 40, 50)
    assert reason in err.value.reason and "\n" not in err.value.reason


def test_a_png_truncated_after_it_is_opened_is_an_error_row(tmp_path):
    data, _ = _hostile("none")
    (tmp_path / "t.png").write_bytes(data)
    with open_scene(tmp_path, SceneRef("t.png"), window_rows=50, stream_min_pixels=1) as r:
        assert r.row_ordered
        (tmp_path / "t.png").write_bytes(data[: len(data) // 2])  # changed between opening and the first window
        with pytest.raises(BadInput, match="truncated or corrupt"):
            r.read_window(0, 0, 40, 50)


def test_a_streamed_png_truncated_between_scan_and_tile_is_an_error_row(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    _scene(src, "a.png", 1)
    _scene(src, "b.png", 2)
    monkeypatch.setattr(png_stream, "STREAM_MIN_PIXELS", 1)
    plan = rs4m.make_plan(sources=[f"folder={src}"], tile_size=128, workers=1, keep_dropped=True)
    rs4m.build(tmp_path / "out", plan, stages=["scan"])
    data = (src / "b.png").read_bytes()
    (src / "b.png").write_bytes(data[: len(data) * 3 // 4])
    rs4m.build(tmp_path / "out", plan, stages=["tile"])
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [(e["path"], e["stage"]) for e in errors] == [("b.png", "tile")]
    assert "changed since the scan" in errors[0]["reason"] and "\n" not in errors[0]["reason"]
    assert {t["scene_path"] for t in _tiles(tmp_path / "out")} == {"a.png"}  # its neighbour is tiled
