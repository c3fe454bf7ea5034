import sys

from netboot.cli import main

sys.exit(main())
