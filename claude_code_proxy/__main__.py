import sys

from claude_code_proxy.cli import main

sys.exit(main())
