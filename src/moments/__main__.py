import sys

from moments.cli import main

sys.exit(main())
