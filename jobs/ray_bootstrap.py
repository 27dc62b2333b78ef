#!/usr/bin/env python3
"""Form a Ray cluster over the hosts of a SageMaker multi-instance job and run a command on the head
(see refinery/launch/bootstrap.py for the protocol):

    ray_bootstrap.py [--port 6379] [--beacon-port 6380] [...] -- refinery dedup s3://run1 -o s3://run2 --executor ray

Hosts come from /opt/ml/input/config/resourceconfig.json (fallback SM_HOSTS); the head is hosts[0];
workers join, then exit 0 when the head says it is done or goes away. RAY_ADDRESS is set for COMMAND.
"""

import sys

from refinery.launch.bootstrap import main

if __name__ == "__main__":
    sys.exit(main())
