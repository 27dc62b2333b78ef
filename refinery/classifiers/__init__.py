"""fastText classifier recipes (toxicity, quality) and the helpers the stages share with them.

Train with ``refinery train-classifier toxicity|quality`` (``refinery/cli_classifiers.py``);
apply with the ``toxicity`` / ``quality`` stages (``refinery/stages/classifiers.py``), which fall
back to the small models shipped in ``refinery/resources/models/`` when none is configured.
See docs/classifiers.md.
"""
