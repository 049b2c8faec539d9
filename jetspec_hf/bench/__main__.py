"""`python -m jetspec_hf.bench`."""

import sys

from .run import main

sys.exit(main())
