"""Ray job entrypoint for the `evaluate` stage (embedding quality against label rasters).

    ray job submit --working-dir . -- python jobs/evaluate.py --config config.yaml [--labels T]

Runs in the job's driver process (no Ray tasks: the evaluated tiles fit in memory) and
writes <workspace>/eval/ (report.md, metrics.json, projection.png, queries.png).
"""

import sys

from antssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
