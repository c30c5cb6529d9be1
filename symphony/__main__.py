import sys

from symphony.cli import main

sys.exit(main())
