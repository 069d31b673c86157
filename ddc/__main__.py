import sys

from ddc.cli import main

sys.exit(main())
