"""Leaving one machine: SageMaker launchers (``refinery launch``), the container side of those jobs
(entrypoint and multi-instance Ray bootstrap), the watchdog (``refinery watch``) and the cost
model (``refinery plan``). See docs/scale.md.

- :mod:`~refinery.launch.steps`     what a job runs (pipeline, one stage, dedup) and where
- :mod:`~refinery.launch.sagemaker` CreateProcessingJob / CreateTrainingJob request dicts, validation
- :mod:`~refinery.launch.package`   code version (git SHA) and container image build commands
- :mod:`~refinery.launch.launcher`  the one-command launch: pack, build, upload config, submit
- :mod:`~refinery.launch.container` the job's entrypoint inside the container
- :mod:`~refinery.launch.bootstrap` forms a Ray cluster over a multi-instance Training job
- :mod:`~refinery.launch.watch`     polls a job and its progress markers; stops stalled jobs
- :mod:`~refinery.launch.plan`      instance-hours, wall time and cost from measured docs/s/core
"""
