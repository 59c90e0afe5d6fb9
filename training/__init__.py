"""Training, caching and evaluation of fVLM models (`python -m training --help`; docs/training.md).

Imports the core (preprocessing, model, catalog, phantom, inference engine); the plugin never
imports this package.
"""
