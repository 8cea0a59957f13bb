"""``python -m pretrain``: the training entry point, also under ``torchrun ... -m pretrain``.

Flags are made from :class:`pretrain.config.TrainConfig` field for field (``--batch-size`` ↔ ``batch_size``);
``rs4m pretrain`` takes the same flags. Under ``torchrun`` spell ``--run`` as ``--run-dir``: torchrun's own
parser takes ``--run`` for an abbreviation of its ``--run-path`` and stops.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import MISSING, fields

from pretrain.config import TrainConfig
from rs4m.errors import Rs4mError


def _flag_type(annotation: str):
    base = annotation.replace(" | None", "")
    return {"int": int, "float": float, "str": str}[base]


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Command-line flags → ``TrainConfig``."""
    p = argparse.ArgumentParser(prog="python -m pretrain", description="SelectiveMAE / MAE pretraining on an "
                                "rs4m manifest (see pretrain/train.py)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "run":  # under torchrun write --run-dir: torchrun reads "--run" as its own --run-path
            p.add_argument(flag, "--run-dir", dest="run", required=True)
        elif f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,  # --x / --no-x
                           help=f.metadata.get("help"))
        else:
            p.add_argument(flag, type=_flag_type(str(f.type)), default=None if f.default is MISSING else f.default,
                           required=f.default is MISSING, choices=f.metadata.get("choices"),
                           help=f.metadata.get("help"))
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    from pretrain.train import train

    try:
        summary = train(parse_args(argv))
    except (Rs4mError, ValueError) as err:
        print(f"pretrain: error: {err}", file=sys.stderr)
        return 2
    if summary.get("last") is not None:
        print(json.dumps({"finished": summary["finished"], **summary["last"]}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
