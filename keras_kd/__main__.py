"""`python -m keras_kd`: the `keras-kd` command line."""

import sys

from keras_kd.cli import main

if __name__ == "__main__":
    sys.exit(main())
