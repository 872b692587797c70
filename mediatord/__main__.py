import sys

from mediatord.cli import main

sys.exit(main())
