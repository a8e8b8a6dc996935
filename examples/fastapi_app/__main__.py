import sys

from examples.serve import serve

sys.exit(serve("fastapi"))
