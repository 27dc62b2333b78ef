"""Classifier recipes: thin entry points over ``refinery.classifiers`` (the packaged library code).

Run one with ``refinery train-classifier toxicity|quality --out DIR`` or, from the repository
root, ``python -m classifiers.toxicity --out DIR``. See README.md here and docs/classifiers.md.
"""
