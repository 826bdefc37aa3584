import unittest

import handler
from sluice.testing import TestHost, event


class AggregatorTest(unittest.TestCase):
    def test_keeps_a_running_total_per_customer(self):
        host = TestHost.install()
        for customer, amount in [("c1", 5), ("c2", 7), ("c1", -2)]:
            data = {"customer": customer, "amount": amount}
            self.assertIsNone(host.handle(handler.handle, event("orders", "order.created", data)))
        self.assertEqual(host.state_json("total/c1"), {"total": 3, "count": 2})
        self.assertEqual(len(host.emitted), 3)
        self.assertEqual(host.emitted[2].json()["total"], 3)
        self.assertEqual(host.emitted[2].key, b"c1")

    def test_rejects_an_order_that_is_not_one_and_keeps_nothing(self):
        host = TestHost.install()
        kind, message = host.handle(handler.handle, event("orders", "order.created", "not json"))
        self.assertEqual(kind, "reject")
        self.assertIn("not JSON", message)
        self.assertEqual(host.emitted, [])
        self.assertEqual(host.state, {})


if __name__ == "__main__":
    unittest.main()
