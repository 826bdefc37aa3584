import unittest

import handler
from sluice.testing import TestHost, event


class HandlerTest(unittest.TestCase):
    def test_counts_per_key(self):
        host = TestHost.install()
        for key in ["a", "b", "a"]:
            self.assertIsNone(host.handle(handler.handle, event("{{name}}-in", "thing.happened", {}, key=key)))
        self.assertEqual(host.state_json("count/a"), 2)
        self.assertEqual(len(host.emitted), 3)


if __name__ == "__main__":
    unittest.main()
