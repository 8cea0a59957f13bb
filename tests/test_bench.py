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
