"""Inference: preprocessing, cached CT encoding, zero-shot scores, heatmaps and grounding.

Heavy modules (torch) load on first use; `preprocess` and `findings` need only numpy.
"""
