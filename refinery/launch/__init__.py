"""Leaving one machine: SageMaker launchers (``refinery launch``), the container side of those jobs
(entrypoint and multi-instance Ray bootstrap), the watchdog (``refinery watch``) and the cost
model (``refinery plan``). See docs/scale.md.

- :mod:`~refinery.launch.steps`     what a launch ships (recipe, one stage, dedup YAML); what a container runs
- :mod:`~refinery.launch.recipe`    a recipe's passes grouped into jobs; the shard stubs that split the document pass
- :mod:`~refinery.launch.sagemaker` CreateProcessingJob / CreateTrainingJob request dicts, validation
- :mod:`~refinery.launch.pipelines` the SageMaker Pipeline definition that chains the jobs; Create/Start requests
- :mod:`~refinery.launch.package`   code version (git SHA) and container image build commands
- :mod:`~refinery.launch.launcher`  the one-command launch: plan, build, upload config + stubs, start the pipeline
- :mod:`~refinery.launch.container` the job's entrypoint inside the container
- :mod:`~refinery.launch.bootstrap` forms a Ray cluster over a multi-instance Training job
- :mod:`~refinery.launch.watch`     polls a pipeline's jobs (or a job) and their progress markers; stops stalled jobs
- :mod:`~refinery.launch.plan`      instance-hours, wall time and cost from measured docs/s/core
"""
