"""fastText classifier recipes (toxicity, quality) and the helpers the stages share with them.

Train with ``refinery train-classifier toxicity|quality`` (``refinery/cli_classifiers.py``);
apply with the ``toxicity`` / ``quality`` stages (``refinery/stages/classifiers.py``).
See docs/classifiers.md.
"""
