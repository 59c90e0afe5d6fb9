"""Inference engine targets (this 2-core CPU), each against its baseline measured in the same run.

1. A text query on an encoded 512x512x300 CT -> heatmap, vs reading, preprocessing and encoding
   the CT again per query (the reference's path, which keeps nothing between queries): at least
   100x faster, for `demo` and for `fvlm-b` (with a BERT-base-sized text encoder, CXR-BERT's size);
   `demo` query median at most 50 ms.
2. `fvlm-b` on a 512x512x300 chest CT with the four `ct-rate` anatomies: our one pass over the
   union crop vs one forward pass per anatomy crop (the reference evaluation): at least 3x faster,
   peak memory at most 4 GB (measured in a child process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.timing import median_seconds, verdict

QUERIES = ["nodule in the left lower lobe", "fluid around the heart", "consolidation", "emphysema",
           "right pleural effusion", "coronary calcification", "opacity in the right upper lobe"]


def bert_base_sized_text_folder(folder) -> str:
    """A local text-encoder folder with CXR-BERT's size (BERT-base: 12 layers, width 768) and the
    MiniLM tokenizer (same BERT uncased vocabulary): CXR-BERT itself cannot be downloaded here, and
    a query's cost depends on the size, not on the trained weights."""
    from transformers import AutoTokenizer, BertConfig

    from napari_fvlm.core.model.text import resolve_text_source

    source = resolve_text_source("sentence-transformers/all-MiniLM-L6-v2")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072).save_pretrained(folder)
    return str(folder)


def bench_query_vs_reencode(model_name: str, ct_path: str, masks, text_source=None) -> float:
    """Query time on cached tokens vs the reference's per-query path (read, prepare, encode, query)."""
    import torch

    from napari_fvlm.core.inference.analyzer import Analyzer
    from napari_fvlm.core.io.nifti import read_nifti
    from napari_fvlm.core.model import build_model, preset

    torch.manual_seed(0)
    net = build_model(preset(model_name), pretrained_text=text_source is None, text_source=text_source)
    analyzer = Analyzer(net.eval())
    encoded = analyzer.encode(read_nifti(ct_path), masks, key="ct")
    analyzer.ground(encoded, "warm-up")
    texts = iter(f"{q}, case {n}" for n in range(100) for q in QUERIES)  # never seen: no text cache hit
    query = median_seconds(lambda: analyzer.ground(encoded, next(texts)), 15)
    reference = median_seconds(lambda: analyzer.ground(analyzer.encode(read_nifti(ct_path), masks), next(texts)), 3)
    ratio = reference / query
    print(f"({model_name}: query {query * 1000:.1f} ms; read + prepare + encode + query "
          f"{reference * 1000:.0f} ms)")
    print(f"{model_name} query on cached tokens vs re-encoding per query: {ratio:.0f}x (target >= 100) "
          f"{verdict(ratio >= 100)}")
    return query


def _fvlm_b_child(mode: str) -> None:
    """Run in a child process: time one analysis mode and report its peak memory."""
    import resource

    import torch

    from benchmarks.chest_ct import chest_ct
    from napari_fvlm.core.inference.encoding import encode_ct
    from napari_fvlm.core.inference.preprocess import prepare_input
    from napari_fvlm.core.model import build_model, preset

    torch.manual_seed(0)
    config = preset("fvlm-b")
    model = build_model(config, with_text=False).eval()
    ct, masks = chest_ct()
    start = time.perf_counter()
    def prepare(anatomies):
        return prepare_input(ct, masks, anatomies, config.anatomy_group_set, config.spacing_zyx,
                             config.hu_window, config.min_input_shape_zyx, config.patch_zyx)
    if mode == "ours":
        encoded = encode_ct(model, prepare(config.anatomies))
        passes, anatomies = 1, len(encoded.embeddings)
        grid = encoded.grid
    else:  # the reference evaluation: crop, pad and encode once per anatomy
        anatomies = 0
        for anatomy in config.anatomies:
            encoded = encode_ct(model, prepare([anatomy]))
            anatomies += len(encoded.embeddings)
            grid = encoded.grid
        passes = len(config.anatomies)
    seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb, "passes": passes, "anatomies": anatomies,
                      "grid": list(grid)}))


def _child(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_inference", "--fvlm-b", mode],
                         capture_output=True, text=True, check=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_fvlm_b() -> None:
    ours, reference = _child("ours"), _child("reference")
    ratio = reference["seconds"] / ours["seconds"]
    print(f"(fvlm-b: ours {ours['seconds']:.1f}s in {ours['passes']} pass, token grid {ours['grid']}; "
          f"per-anatomy crops {reference['seconds']:.1f}s in {reference['passes']} passes)")
    print(f"fvlm-b 512x512x300, 4 anatomies, one pass vs per-anatomy crops: {ratio:.1f}x (target >= 3) "
          f"{verdict(ratio >= 3)}")
    print(f"fvlm-b peak memory: {ours['peak_gb']:.2f} GB (target <= 4) {verdict(ours['peak_gb'] <= 4)}")


def main() -> None:
    import tempfile

    from benchmarks.chest_ct import chest_ct
    from napari_fvlm.core.io.nifti import write_nifti

    with tempfile.TemporaryDirectory() as folder:
        ct, masks = chest_ct()  # a real chest CT's size: the reference path reads and resamples it
        ct_path = write_nifti(ct, os.path.join(folder, "ct.nii.gz"))
        demo_query = bench_query_vs_reencode("demo", str(ct_path), masks)
        text = bert_base_sized_text_folder(os.path.join(folder, "bert-base"))
        bench_query_vs_reencode("fvlm-b", str(ct_path), masks, text_source=text)
    print(f"demo query median: {demo_query * 1000:.1f} ms (target <= 50) {verdict(demo_query <= 0.05)}")
    bench_fvlm_b()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fvlm-b":
        _fvlm_b_child(sys.argv[2])
    else:
        main()
