"""The `fvlm` command: phantom, demo, analyze, report, compare, convert-official.

Every refusal is one line on stderr and exit status 2; no tracebacks for bad input. A step that
failed on its own (TotalSegmentator's worker) exits with status 1 and what that step printed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .core.errors import FvlmInputError, FvlmRuntimeError, ProcessOutput

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# Commands that end with every output written and closed, and no window: their process may skip
# the interpreter's teardown of torch and transformers (1-2 s of freeing modules, on every run).
FAST_EXIT_COMMANDS = ("analyze", "convert-official")


def _cmd_phantom(args) -> None:
    from .core.phantom import FindingRequest, generate_phantom, write_phantom

    requests = None
    if args.finding:
        requests = [FindingRequest(*item.split(":", 1)) if ":" in item else FindingRequest(item)
                    for item in args.finding]
    phantom = generate_phantom(args.seed, findings=requests)
    write_phantom(phantom, args.out)
    names = ", ".join(f.name for f in phantom.findings) or "no findings"
    print(f"phantom {args.seed} written to {args.out} ({names})")


def _cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(seed=args.seed, analyze=not args.no_analyze)


def _cmd_analyze(args) -> None:
    from .analyze import run_analyze

    run_analyze(args.ct, args.out, masks=args.masks, model=args.model, queries=args.query or (),
                device=args.device, protocol=args.protocol, dicom_out=args.dicom_out)


def _cmd_report(args) -> None:
    from .reporting import run_report

    run_report(args.findings, args.out)


def _cmd_compare(args) -> None:
    from .reporting import run_compare

    run_compare(args.prior, args.current, args.out)


def _cmd_convert(args) -> None:
    from .core.model.convert_official import convert_official

    config = _model_config(args.config) if args.config else None
    _, notes = convert_official(args.checkpoint, args.out, config=config, text_encoder=args.text_encoder)
    print(f"converted {args.checkpoint} -> {args.out}" + "".join(f"\n  note: {n}" for n in notes))


def _model_config(value: str):
    """A preset name or a model config JSON file."""
    from pathlib import Path

    from .core.model.config import PRESETS, ModelConfig

    if value in PRESETS:
        return PRESETS[value]
    path = Path(value)
    if not path.is_file():
        raise FvlmInputError(f"--config '{value}' is neither a preset ({', '.join(PRESETS)}) nor a JSON file.")
    return ModelConfig.from_json(path.read_text(encoding="utf-8"))


def _cmd_download(args) -> None:
    from .core.inference.models import resolve_model_source

    print(resolve_model_source(args.model, download=True))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fvlm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    phantom = sub.add_parser("phantom", help="write a synthetic chest CT with masks, lesions and a report")
    phantom.add_argument("--out", required=True, help="output folder")
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--finding", action="append", metavar="NAME[:WHERE]",
                         help='e.g. "lung nodule:left" (repeatable; default: random findings)')
    phantom.set_defaults(run=_cmd_phantom)

    demo = sub.add_parser("demo", help="open napari with the phantom, its masks and the fVLM panel")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-analyze", action="store_true", help="open only; do not start the analysis")
    demo.set_defaults(run=_cmd_demo)
    analyze = sub.add_parser("analyze", help="score every anatomy for every finding; ground queries")
    analyze.add_argument("ct", help="CT: NIfTI file or DICOM folder")
    analyze.add_argument("--masks", help="anatomy masks: TotalSegmentator multilabel NIfTI or per-class "
                                         "folder (default: run TotalSegmentator)")
    analyze.add_argument("--model", help="checkpoint folder, 'demo' (default) or a hub id such as fvlm-b")
    analyze.add_argument("--query", action="append", metavar="TEXT", help="free-text finding (repeatable)")
    analyze.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    analyze.add_argument("--protocol", choices=["reference", "single-pass"],
                         help="inference protocol (default: the model's; converted official weights use "
                              "'reference', the per-organ crops of the official evaluation)")
    analyze.add_argument("--out", required=True, help="output folder (new, empty, or an earlier output)")
    analyze.add_argument("--dicom-out", metavar="DIR", help="also write DICOM SEG and SR results referencing "
                                                            "the series (a CT read from DICOM only)")
    analyze.set_defaults(run=_cmd_analyze)

    report = sub.add_parser("report", help="report draft from a saved analysis (findings.json or its folder)")
    report.add_argument("findings")
    report.add_argument("--out", help="text file to write (default: print)")
    report.set_defaults(run=_cmd_report)
    compare = sub.add_parser("compare", help="prior vs current: per-anatomy score changes of two saved analyses")
    compare.add_argument("prior")
    compare.add_argument("current")
    compare.add_argument("--out", help="text file to write (default: print)")
    compare.set_defaults(run=_cmd_compare)

    convert = sub.add_parser("convert-official", help="import the reference fVLM .pth (tensors only)")
    convert.add_argument("checkpoint")
    convert.add_argument("out")
    convert.add_argument("--text-encoder", help="local CXR-BERT folder (default: the hub cache)")
    convert.add_argument("--config", help="model config: a preset name or a JSON file (default: fvlm-b)")
    convert.set_defaults(run=_cmd_convert)

    download = sub.add_parser("download", help="download a model from the hub into the local cache")
    download.add_argument("model", help="hub id, or fvlm-b")
    download.set_defaults(run=_cmd_download)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except FvlmInputError as err:
        print(f"fvlm {args.command}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except FvlmRuntimeError as err:  # not the input's fault: what failed, and its own output
        cause = f"\n{err.__cause__}" if isinstance(err.__cause__, ProcessOutput) else ""
        print(f"fvlm {args.command}: {err}{cause}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"fvlm {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def run() -> None:
    """The installed `fvlm` command: `main`, then, for `FAST_EXIT_COMMANDS`, an exit without the
    interpreter's teardown (streams and logs flushed first; files were closed by the command)."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in FAST_EXIT_COMMANDS:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
