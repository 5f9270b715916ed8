import sys

from rediswq.cli import main

sys.exit(main())
