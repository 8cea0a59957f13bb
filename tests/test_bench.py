"""The throughput benchmark's command line and figures, on the tiny model."""

from __future__ import annotations

import json

import pytest

from pretrain import bench
from pretrain.flops import flops_per_image


def test_bench_json_has_the_figures(capsys):
    bench.main(["--method", "selectivemae", "--model", "vit_test", "--batch-size", "2", "--steps", "2",
                "--warmup", "1", "--img-size", "96", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["images_per_s"] > 0 and out["step_ms_p50"] > 0
    assert out["images_per_s"] == pytest.approx(2000 / out["step_ms_p50"], rel=0.5)
    assert out["flops_per_image"] == flops_per_image("selectivemae", "vit_test", img_size=96).train
    assert out["mfu"] is None and out["device"] == "cpu"
    assert isinstance(out["peak_mem_bytes"], int) and out["peak_mem_bytes"] >= 0


def test_bench_rejects_unknown_model(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--method", "mae", "--model", "vit_huge", "--json"])
    assert "vit_test" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part(tmp_path):
    """The GPU check's code paths, tiny, on CPU: every part reports figures, none fails (≈ 1–5 min on CPU)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import gpu_check
    from tests.pretrain_corpus import build_corpus

    manifest = build_corpus(tmp_path / "corpus" / "out")
    results = tmp_path / "RESULTS.md"
    body = gpu_check.main(["--dry-run", "--manifest", str(manifest), "--results", str(results),
                           "--work", str(tmp_path / "work")])
    text = results.read_text()
    assert "## gpu_check_dry_run" in text and body in text
    assert "gpu tests: exit 5" in body or "skipped" in body  # no CUDA: nothing selected or all skipped
    speed_rows = [line for line in body.splitlines() if line.startswith("| vit_test |")]
    assert len(speed_rows) == 1 and "×**" in speed_rows[0] and "error" not in body.lower()
    loader_rows = [line for line in body.splitlines() if line.startswith("| 0 |") or line.startswith("| 1 |")]
    assert len(loader_rows) == 2 and all(float(r.split("|")[4]) > 0 for r in loader_rows)
    assert "pretraining run: 3 steps" in body and (tmp_path / "RESULTS.png").is_file()
