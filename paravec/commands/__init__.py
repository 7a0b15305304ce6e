"""Sub-commands of the ``paravec`` command line; see :mod:`paravec.cli`."""
