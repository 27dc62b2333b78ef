#!/usr/bin/env python3
"""Container entrypoint of refinery's SageMaker jobs (see refinery/launch/container.py).

    entrypoint.py processing      # a Processing job instance: the recipe's document pass over the
                                  # shards whose stubs SageMaker gave this instance (ShardedByS3Key)
    entrypoint.py train [BOOTSTRAP OPTIONS]
                                  # a Training job instance: form a Ray cluster over all instances
                                  # (jobs/ray_bootstrap.py) and run the later passes on the head
"""

import sys

from refinery.launch.container import main

if __name__ == "__main__":
    sys.exit(main())
