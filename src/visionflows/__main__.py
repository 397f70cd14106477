import sys

from visionflows.cli.main import main

sys.exit(main())
