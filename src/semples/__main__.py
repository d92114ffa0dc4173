import sys

from semples.cli import main

sys.exit(main())
