"""Ray job entrypoint for the `index` stage (the service's approximate-nearest-neighbour index).

    ray job submit --working-dir . -- python jobs/index.py --config config.yaml

Connects to the cluster named by RAY_ADDRESS (set by `ray job submit` and KubeRay); the
index is built in the job's driver process with faiss threads.
"""

import sys

from antssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", *sys.argv[1:]]))
