"""`python -m jetspec_hf.bench`."""

import sys

from . import main

sys.exit(main())
