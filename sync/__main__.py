import sys

from sync.cli.main import main

sys.exit(main())
