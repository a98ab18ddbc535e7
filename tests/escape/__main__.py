"""python3 -m escape GROUP [ATTEMPT...], run from / inside the container (see probe.py)."""

import sys

from . import probe

sys.exit(probe.main(sys.argv[1], sys.argv[2:]))
