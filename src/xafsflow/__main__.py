import sys

from xafsflow.cli import main

sys.exit(main())
