"""tumorbench's main job: which model detects these tumors best, by how much, and is the difference real?

    python experiments/compare.py                                  # embedded synthetic study, local Ray
    python experiments/compare.py --study lgg --preset default
    python experiments/compare.py --data PATH                      # any dataset: layout and task detected
    python experiments/compare.py --preset smoke --storage s3://BUCKET/runs/smoke
    ray submit --tmux cluster.yaml experiments/compare.py -- --study brats --preset full --gpus-per-trial 2 \\
        --data /home/ray/data/brats --storage s3://BUCKET/runs/brats-full --out /home/ray/results/brats-full
    ray job submit --working-dir . -- python experiments/compare.py --study brats --preset full \\
        --data /home/ray/data/brats --storage s3://BUCKET/runs/brats-full --out /home/ray/results/brats-full

The same as ``tumorbench compare``: the studies (``tumorbench.study.presets``) and this command
line (``tumorbench.study.cli``) are part of the installed package, so this file works when
``ray submit`` copies it alone. ``--help`` lists the options.
"""

import sys

from tumorbench.study.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="compare.py"))
