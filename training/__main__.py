"""Command line: ``python -m training {train,cache,evaluate,calibrate,calibration-check,laterality,compare} ...``
(also under torchrun).

    python -m training train --config training/configs/phantom-demo.json [--set key=value]... [--resume]
    torchrun --nproc_per_node 2 -m training train --config ...
    python -m training cache --config ... [--split train]      # build the sample caches only
    python -m training evaluate --model runs/phantom-demo/best --split test
    python -m training calibrate --model runs/phantom-demo/best [--split val]   # writes calibration.json
    python -m training calibration-check --model runs/phantom-demo/best --split test
    python -m training evaluate --model fvlm-b-official --ct-rate ROOT   # any model, raw CT-RATE volumes
    python -m training laterality --model runs/phantom-demo/best --seeds 20000:20128
    python -m training compare runs/phantom-anatomy runs/phantom-global-clip --out table.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from napari_fvlm.core.errors import FvlmInputError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description="Train and evaluate fVLM models.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model from a config file")
    train.add_argument("--config", required=True, help="experiment file, e.g. training/configs/phantom-demo.json")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value (model.width=64 sets a model override); repeatable")
    train.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    train.add_argument("--stop-after", type=int, default=None, metavar="STEPS",
                       help="stop (with a checkpoint) after this many steps; the schedule is unchanged")
    cache = commands.add_parser("cache", help="prepare and cache the samples of an experiment")
    cache.add_argument("--config", required=True)
    cache.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    cache.add_argument("--split", choices=("train", "val", "test"), action="append")
    evaluate = commands.add_parser("evaluate", help="zero-shot evaluation with the CT-CLIP protocol")
    evaluate.add_argument("--model", required=True, help="checkpoint folder (a run's best/ folder)")
    evaluate.add_argument("--split", default="test", choices=("val", "test"))
    evaluate.add_argument("--out", default=None, help="folder for the JSON and markdown results")
    evaluate.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    evaluate.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                          help="override the run's config (e.g. cache_dir=...)")
    calibrate = commands.add_parser("calibrate", help="fit thresholds and probability calibration on a "
                                                      "labelled split; writes MODEL/calibration.json")
    calibrate.add_argument("--model", required=True, help="checkpoint folder")
    calibrate.add_argument("--split", default="val", choices=("val", "train"))
    calibrate.add_argument("--min-class", type=int, default=10, metavar="N",
                           help="rows of each class an anatomy x finding needs for its own fit (else per finding)")
    calibrate.add_argument("--min-auc", type=float, default=0.75, metavar="AUC",
                           help="a finding the model separates less well on the split (AUC) is never flagged")
    check = commands.add_parser("calibration-check", help="expected calibration error, share above threshold "
                                                          "and a reliability plot on a held-out split")
    check.add_argument("--model", required=True, help="checkpoint folder with calibration.json")
    check.add_argument("--split", default="test", choices=("val", "test"))
    check.add_argument("--out", default=None, help="folder for calibration-check.json/.md and reliability.png")
    for command in (calibrate, check):
        command.add_argument("--config", default=None, help="training config that defines the splits, for a "
                             "model not written by training (e.g. a converted official checkpoint)")
        command.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                             help="override the config (e.g. cache_dir=...)")
    evaluate.add_argument("--ct-rate", metavar="ROOT", help="evaluate on the CT-RATE layout at ROOT with the "
                          "model's own inference protocol (for models not trained here, e.g. converted "
                          "official weights; docs/ct-rate-official.md)")
    evaluate.add_argument("--masks", default="masks", help="with --ct-rate: the TotalSegmentator masks folder")
    evaluate.add_argument("--limit", type=int, default=0, help="with --ct-rate: at most this many volumes per split")
    evaluate.add_argument("--val-fraction", type=float, default=0.05,
                          help="with --ct-rate: share of the train patients held out for validation (thresholds)")
    evaluate.add_argument("--metadata-rescale", action="store_true",
                          help="with --ct-rate: apply the metadata CSV's slope/intercept (CT-RATE v1 files)")
    evaluate.add_argument("--protocol", choices=("reference", "single-pass"),
                          help="with --ct-rate: override the model's inference protocol")
    laterality = commands.add_parser("laterality", help="left/right queries on held-out phantoms, "
                                                        "with the CT stored in several orientations")
    laterality.add_argument("--model", required=True, help="checkpoint folder")
    laterality.add_argument("--seeds", default="20000:20128", help="phantom seed range START:STOP (held out)")
    compare = commands.add_parser("compare", help="evaluated runs side by side (the ablation table)")
    compare.add_argument("runs", nargs="+", help="run folders, each evaluated into RUN/eval-test")
    compare.add_argument("--out", default=None, help="markdown file to write (default: print)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if args.command == "train":
            from .config import load_config
            from .trainer import train

            run_dir = train(load_config(args.config, args.overrides), resume=args.resume, stop_after=args.stop_after)
            if int(os.environ.get("RANK", "0")) == 0:
                print(f"run folder: {run_dir}")
        elif args.command == "cache":
            from .config import load_config
            from .datasets import prepare_split
            from .focal_cache import prefill_channels

            config = load_config(args.config, args.overrides)
            for split in args.split or ("train", "val", "test"):
                paths = prepare_split(config, split, workers=config.num_workers, progress=True)
                if config.model_config().focal:  # the focal branch's fixed filters, once per sample
                    prefill_channels(paths, config.model_config(), workers=config.num_workers, progress=True)
                print(f"{split}: {len(paths)} samples in {paths[0].parent if paths else '-'}")
        elif args.command == "laterality":
            from napari_fvlm.core.inference.analyzer import Analyzer
            from napari_fvlm.core.inference.models import load_model

            from .laterality import evaluate_laterality

            start, stop = (int(v) for v in args.seeds.split(":"))
            model, _ = load_model(args.model, "auto")
            print(json.dumps(evaluate_laterality(Analyzer(model), range(start, stop)), indent=2))
        elif args.command == "calibrate":
            from .calibrate import calibrate_checkpoint

            calibration, report = calibrate_checkpoint(args.model, args.split, args.config, args.overrides,
                                                       args.min_class, args.min_auc)
            levels = {"anatomy x finding": len(calibration.pairs), "finding": len(calibration.findings)}
            print(json.dumps({"written": str(Path(args.model) / "calibration.json"), "fits": levels,
                              "fitted_on": calibration.fitted_on, "ece_on_fitting_split": report["ece"],
                              "above_share": report["above_share"], "present_share": report["present_share"]},
                             indent=2))
        elif args.command == "calibration-check":
            from .calibrate import check_calibration

            report = check_calibration(args.model, args.split, args.out, args.config, args.overrides)
            print(json.dumps({k: report[k] for k in ("split", "samples", "rows", "ece", "ece_raw", "above_share",
                                                     "present_share", "out")}, indent=2))
        elif args.command == "compare":
            from .compare import comparison_table, load_run

            table = comparison_table([load_run(run) for run in args.runs])
            if args.out:
                Path(args.out).write_text(table, encoding="utf-8")
            print(table)
        elif args.ct_rate:
            from .official_eval import evaluate_on_ct_rate

            result = evaluate_on_ct_rate(args.model, args.ct_rate, args.masks, args.split, args.out, args.bootstrap,
                                         val_fraction=args.val_fraction, limit=args.limit,
                                         metadata_rescale=args.metadata_rescale,
                                         protocol=args.protocol)
            print(json.dumps(result["summary"], indent=2))
        else:
            from .evaluate import evaluate_checkpoint

            result = evaluate_checkpoint(args.model, args.split, args.out, args.bootstrap, args.overrides)
            print(json.dumps(result["summary"], indent=2))
    except FvlmInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
