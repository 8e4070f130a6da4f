"""Exit statuses of every ``ecgstream`` command, defined once.

==========  =====  ===========================================================
name        value  meaning
==========  =====  ===========================================================
EXIT_OK     0      success (``verify``: the two recordings are of one person)
EXIT_FAIL   1      a runtime failure: a source lost for good, a broker that
                   refused with ``on_connect_failure = "exit"``, a damaged
                   template (``verify``: different persons)
EXIT_USAGE  2      bad usage or input: argparse, an unreadable record, a
                   source URI that cannot be opened for the command
EXIT_CONFIG 78     a configuration that cannot work (``EX_CONFIG`` of
                   sysexits.h): systemd's ``RestartPreventExitStatus=78``
                   keeps the daemon from restarting in a loop
EXIT_SIGINT 130    interrupted by Ctrl-C
==========  =====  ===========================================================
"""

from __future__ import annotations

__all__ = ["EXIT_CONFIG", "EXIT_FAIL", "EXIT_OK", "EXIT_SIGINT", "EXIT_USAGE"]

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78
EXIT_SIGINT = 130
