import sys

from symphony.app.cli import main

sys.exit(main())
