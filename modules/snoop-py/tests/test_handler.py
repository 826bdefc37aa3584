import unittest

import handler
from sluice.testing import TestHost, event


class SnoopTest(unittest.TestCase):
    def test_reports_one_outcome_per_attempt(self):
        host = TestHost.install(config={"port": "1"})
        self.assertIsNone(host.handle(handler.handle, event("snoop-in", "go", {})))
        self.assertEqual(
            sorted(host.emitted[0].json()), ["env", "environ", "file", "listdir", "socket"]
        )


if __name__ == "__main__":
    unittest.main()
