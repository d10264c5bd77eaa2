"""PEP 517 build backend: setuptools' own (``setuptools.build_meta``), without its "Editable installation"
notice.

setuptools prints that notice as a warning on every ``pip install -e .`` of a project whose import packages
live in several top-level folders: here the user's layout (``mambaseq/``, ``kernels/``, ``pipelines/``, ...,
installed as ``mambaseq.*`` through ``package-dir`` in pyproject.toml). It warns that a folder named like the
package in the working directory may shadow the install; the only such folder is ``mambaseq/`` itself, the
very code the editable install points to, so the notice says nothing here. It is an
``InformationOnly`` message (setuptools' own class for notices that are not problems); every other warning
still shows, so a clean ``pip install -e .`` stays a check of the packaging.
"""

import warnings

from setuptools.build_meta import *  # noqa: F401,F403  (the PEP 517 hooks)
from setuptools.build_meta import __all__  # noqa: F401
from setuptools.warnings import InformationOnly

warnings.filterwarnings("ignore", message="Editable installation", category=InformationOnly)
