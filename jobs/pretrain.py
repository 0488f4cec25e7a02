"""Ray job entrypoint for the `pretrain` stage.

    ray job submit --working-dir . -- python jobs/pretrain.py --config config.yaml

Connects to the cluster named by RAY_ADDRESS (set by `ray job submit` and KubeRay).
"""

import sys

from antssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
