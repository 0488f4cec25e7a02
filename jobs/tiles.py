"""Ray job entrypoint for the `tiles` stage.

    ray job submit --working-dir . -- python jobs/tiles.py --config config.yaml

Connects to the cluster named by RAY_ADDRESS (set by `ray job submit` and KubeRay).
"""

import sys

from antssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["tiles", *sys.argv[1:]]))
