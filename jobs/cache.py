"""Ray job entrypoint for the `cache` stage.

    ray job submit --working-dir . -- python jobs/cache.py --config config.yaml

Connects to the cluster named by RAY_ADDRESS (set by `ray job submit` and KubeRay).
"""

import sys

from antssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["cache", *sys.argv[1:]]))
