"""The poplib, Maildir, listing-cache, TLS (implicit, STLS), SASL and mbox
(dotlock, rewrite, in place) and LMTP suites, unchanged, against `apop serve
--workers 2`: every login goes through the auth process, every session runs
in a worker under its seccomp sandbox and Landlock file restriction, so a
system call or a file the workers were not meant to need fails a test.
(TLS reload by renamed files is covered by test_workers.py: these suites keep
their certificates beside the data directory, which a worker may not read.)"""
import unittest

from apoptest import servers_with

import test_maildir
import test_maildir_cache
import test_lmtp
import test_mbox
import test_mbox_inplace
import test_poplib
import test_quota
import test_sasl
import test_tls


# Mixin: every server the test starts runs with --workers 2.
InWorkers = servers_with("--workers", "2")


class WorkersPoplibTest(InWorkers, test_poplib.PoplibTest):
    pass


class WorkersMaildirTest(InWorkers, test_maildir.MaildirTest):
    pass


class WorkersMaildirCacheTest(InWorkers, test_maildir_cache.MaildirCacheTest):
    pass


class WorkersImplicitTlsTest(InWorkers, test_tls.ImplicitTlsTest):
    pass


class WorkersStlsTest(InWorkers, test_tls.StlsTest):
    pass


class WorkersSaslTest(InWorkers, test_sasl.SaslTest):
    pass


class WorkersLmtpTest(InWorkers, test_lmtp.LmtpTest):
    pass


class WorkersQuotaTest(InWorkers, test_quota.QuotaTest):
    """Quotas in the LMTP process: the limits come over auth-userdb, the
    refusals count into the LMTP process's metrics row."""


class WorkersMboxTest(InWorkers, test_mbox.MboxTest):
    pass


class WorkersMboxInPlaceTest(InWorkers, test_mbox_inplace.MboxInPlaceTest):
    pass


if __name__ == "__main__":
    unittest.main()
