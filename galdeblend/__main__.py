import sys

from galdeblend.cli import main

sys.exit(main())
