"""Makes the compiler (tools/nnc) and the zoo (models) importable from the SCons files, also when
a SConstruct elsewhere (a test's) uses the builders. The build's one sys.path edit: delete this
module and its imports once the project is installed as a package."""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO, os.path.join(REPO, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)
